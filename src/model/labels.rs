//! ImageNet-1k class names, shipped with the crate.
//!
//! `imagenet_classes.txt` holds timm's `ImageNetInfo` descriptions (WordNet lemmas, e.g.
//! "tabby, tabby cat"), one per line in class-id order; `tests/golden/make_tables.py`
//! regenerates it.

use std::borrow::Cow;
use std::sync::LazyLock;

static IMAGENET: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| include_str!("imagenet_classes.txt").lines().collect());

/// The 1000 ImageNet-1k class names, indexed by class id.
pub fn imagenet() -> &'static [&'static str] {
    &IMAGENET
}

/// The name of `class_id` for a classifier with `num_classes` outputs: the ImageNet name
/// for 1000-class classifiers, `class <id>` otherwise.
pub fn label(class_id: usize, num_classes: usize) -> Cow<'static, str> {
    match imagenet().get(class_id) {
        Some(name) if num_classes == IMAGENET.len() => Cow::Borrowed(name),
        _ => Cow::Owned(format!("class {class_id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_has_1000_names_in_class_order() {
        assert_eq!(imagenet().len(), 1000);
        assert_eq!(imagenet()[0], "tench, Tinca tinca");
        assert_eq!(imagenet()[281], "tabby, tabby cat");
        assert_eq!(imagenet()[967], "espresso");
        assert_eq!(label(967, 1000), "espresso");
        assert_eq!(label(3, 10), "class 3");
    }
}
