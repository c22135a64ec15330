//! The `regions` property: parts of the frame classified as engine streams of their own,
//! written `id:x1,y1,x2,y2` and separated by `;` (whitespace around the parts and a
//! trailing `;` are fine), e.g. `gate:0.55,0.20,0.95,0.90;door:0,0,0.3,1`. Checked with
//! the daemon's rules for `[[camera.region]]`: ids as camera ids ([`check_camera_id`]),
//! unique, and boxes of 4 finite fractions with `0 ≤ x1 < x2 ≤ 1`, `0 ≤ y1 < y2 ≤ 1`
//! ([`RegionBox::new`]).

use effistream::config::check_camera_id;
use effistream::source::RegionBox;

/// One region of the property: the daemon's `[[camera.region]]` without a model (the
/// element runs one).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Region {
    pub id: String,
    pub bounds: RegionBox,
}

impl Region {
    /// The engine stream (and topic levels) of this region of `camera`, named as the
    /// daemon names it ([`effistream::source::RegionSettings::stream_name`]).
    pub fn stream_name(&self, camera: &str) -> String {
        format!("{camera}/{}", self.id)
    }
}

/// The regions `text` lists, in its order; the error names the region (or the entry that
/// is not one) and the reason.
pub(super) fn parse(text: &str) -> Result<Vec<Region>, String> {
    let mut regions: Vec<Region> = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, values)) = entry.split_once(':') else {
            return Err(format!(
                "regions: {entry:?} is not id:x1,y1,x2,y2 (edges as fractions of the frame)"
            ));
        };
        let id = id.trim();
        check_camera_id(id).map_err(|reason| format!("regions: region id {id:?}: {reason}"))?;
        if let Some(first) = regions.iter().position(|r| r.id == id) {
            return Err(format!(
                "regions: region {id:?}: duplicate id (regions {} and {})",
                first + 1,
                regions.len() + 1
            ));
        }
        let numbers = values
            .split(',')
            .map(|v| {
                let v = v.trim();
                v.parse::<f64>()
                    .map_err(|_| format!("regions: region {id:?}: {v:?} is not a number"))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        let bounds = RegionBox::new(&numbers)
            .map_err(|reason| format!("regions: region {id:?} {}: {reason}", values.trim()))?;
        regions.push(Region {
            id: id.to_owned(),
            bounds,
        });
    }
    Ok(regions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids_and_boxes(text: &str) -> Vec<(String, [f64; 4])> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|r| {
                let b = r.bounds;
                (r.id, [b.x1, b.y1, b.x2, b.y2])
            })
            .collect()
    }

    #[test]
    fn entries_in_order_with_whitespace_and_a_trailing_separator() {
        assert_eq!(
            ids_and_boxes(" gate : 0.55, 0.20 ,0.95,0.9 ;door:0,0,0.3,1; "),
            [
                ("gate".to_owned(), [0.55, 0.2, 0.95, 0.9]),
                ("door".to_owned(), [0.0, 0.0, 0.3, 1.0]),
            ]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse(" ; ").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_region_and_the_reason() {
        for (text, error) in [
            (
                "gate 0,0,1,1",
                "regions: \"gate 0,0,1,1\" is not id:x1,y1,x2,y2",
            ),
            (
                "a/b:0,0,1,1",
                "regions: region id \"a/b\": must not contain `/`",
            ),
            (":0,0,1,1", "regions: region id \"\": must not be empty"),
            (
                "gate:0,0,1,1;gate:0,0,0.5,0.5",
                "regions: region \"gate\": duplicate id (regions 1 and 2)",
            ),
            (
                "gate:0,0,x,1",
                "regions: region \"gate\": \"x\" is not a number",
            ),
            (
                "gate:0,0,1",
                "regions: region \"gate\" 0,0,1: expected 4 numbers [x1, y1, x2, y2]",
            ),
            (
                "gate:0.5,0,0.5,1",
                "regions: region \"gate\" 0.5,0,0.5,1: needs 0 <= x1 < x2 <= 1",
            ),
            (
                "gate:0,0.2,1,1.5",
                "regions: region \"gate\" 0,0.2,1,1.5: needs 0 <= y1 < y2 <= 1",
            ),
            (
                "gate:0,0,inf,1",
                "regions: region \"gate\" 0,0,inf,1: every value must be a finite number",
            ),
        ] {
            let got = parse(text).unwrap_err();
            assert!(got.starts_with(error), "{text}: {got}");
        }
    }
}
