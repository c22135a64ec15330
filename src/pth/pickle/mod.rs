//! The pickle machine: runs the opcodes of a pickle without executing anything. Globals it
//! does not know become opaque objects; the torch functions it models are in [`torch`],
//! and the read-only views used once loading is done in [`inspect`].

mod inspect;
mod torch;
mod value;

use std::collections::HashMap;
use std::rc::Rc;

use crate::pth::{PthError, Result};

use self::value::{Dict, Global, GlobalKind, Obj, RootStorage};
pub(super) use self::value::{StorageRef, TensorProblem, TensorSpec, Value};

// Opcodes (see CPython's Lib/pickletools.py).
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const POP: u8 = b'0';
const POP_MARK: u8 = b'1';
const DUP: u8 = b'2';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const BINPERSID: u8 = b'Q';
const REDUCE: u8 = b'R';
const BINSTRING: u8 = b'T';
const SHORT_BINSTRING: u8 = b'U';
const BINUNICODE: u8 = b'X';
const APPEND: u8 = b'a';
const BUILD: u8 = b'b';
const GLOBAL: u8 = b'c';
const DICT: u8 = b'd';
const EMPTY_DICT: u8 = b'}';
const APPENDS: u8 = b'e';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const LIST: u8 = b'l';
const EMPTY_LIST: u8 = b']';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const SETITEMS: u8 = b'u';
const BINFLOAT: u8 = b'G';
pub(super) const PROTO: u8 = 0x80;
const NEWOBJ: u8 = 0x81;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const EMPTY_SET: u8 = 0x8f;
const ADDITEMS: u8 = 0x90;
const FROZENSET: u8 = 0x91;
const NEWOBJ_EX: u8 = 0x92;
const STACK_GLOBAL: u8 = 0x93;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;
const BYTEARRAY8: u8 = 0x96;

// Bounds on the machine (real checkpoints stay far below all of them).
const MAX_STACK: usize = 1 << 20;
const MAX_MARKS: usize = 4096;
const MAX_MEMO: usize = 1 << 22;
const MAX_HEAP: usize = 1 << 21;
/// Approximate bytes the machine's objects may take (see [`Machine::charge`]).
const MAX_PICKLE_MEMORY: usize = 128 << 20;
/// Bookkeeping bytes charged per heap allocation.
const ALLOCATION: usize = 16;
const MAX_OPS: u64 = 1 << 28;
const MAX_GLOBAL_LINE: usize = 1024;
/// Most dimensions of a tensor (real ones have a handful).
const MAX_DIMS: usize = 64;
/// Longest storage key (torch writes a decimal number).
const MAX_KEY_BYTES: usize = 256;
/// How deep `describe` and `_rebuild_from_type_v2` nesting go.
const MAX_DEPTH: usize = 8;

pub(super) struct Machine {
    heap: Vec<Obj>,
    pub(super) storages: Vec<StorageRef>,
    pub(super) roots: HashMap<Rc<str>, RootStorage>,
    /// Globals by `module\nname`: one object per class or function, as in Python.
    globals: HashMap<String, Value>,
    /// Approximate bytes held by the heap, strings, containers and memo.
    memory: usize,
    // Per-load state.
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    ops: u64,
}

/// The cursor of one `load`: input bytes and where errors should say they are.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    /// Position of the opcode being executed.
    op_pos: usize,
    container: &'static str,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let remaining = self.data.len().saturating_sub(self.pos);
        match usize::try_from(n) {
            Ok(n) if n <= remaining => {
                let out = &self.data[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(PthError::Truncated {
                what: format!("pickle opcode {what} at byte {}", self.op_pos),
                needed: n,
                offset: self.pos as u64,
                container: self.container,
                end: self.data.len() as u64,
            }),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn line(&mut self, what: &str) -> Result<&'a str> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let window = &rest[..rest.len().min(MAX_GLOBAL_LINE)];
        let Some(n) = window.iter().position(|&b| b == b'\n') else {
            return Err(self.error(format!("{what} name is not newline-terminated")));
        };
        let line = &rest[..n];
        self.pos += n + 1;
        std::str::from_utf8(line).map_err(|_| self.error(format!("{what} name is not UTF-8")))
    }

    fn error(&self, msg: String) -> PthError {
        PthError::Pickle {
            pos: self.op_pos as u64,
            msg,
        }
    }
}

fn le_int(bytes: &[u8]) -> Value {
    if bytes.len() <= 8 {
        let mut buf = [0u8; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        let mut v = i64::from_le_bytes(buf);
        if !bytes.is_empty() && bytes.len() < 8 {
            // Sign-extend.
            let shift = 64 - 8 * bytes.len() as u32;
            v = (v << shift) >> shift;
        }
        Value::Int(v)
    } else {
        Value::BigInt(Rc::from(bytes))
    }
}

impl Machine {
    pub(super) fn new() -> Self {
        Machine {
            heap: Vec::new(),
            storages: Vec::new(),
            roots: HashMap::new(),
            globals: HashMap::new(),
            memory: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            ops: 0,
        }
    }

    /// Runs one pickle starting at `data[start]`; returns its value and the position after
    /// its `STOP`. Objects stay in the heap across loads; stack and memo do not.
    pub(super) fn load(
        &mut self,
        data: &[u8],
        start: usize,
        container: &'static str,
    ) -> Result<(Value, usize)> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        let mut input = Input {
            data,
            pos: start,
            op_pos: start,
            container,
        };
        loop {
            input.op_pos = input.pos;
            self.ops += 1;
            if self.ops > MAX_OPS {
                return Err(PthError::PickleLimit {
                    pos: input.op_pos as u64,
                    limit: MAX_OPS as usize,
                    what: "opcodes",
                });
            }
            let op = input.u8("")?;
            if op == STOP {
                let value = self.pop(&input)?;
                return Ok((value, input.pos));
            }
            self.step(op, &mut input)?;
            if self.stack.len() > MAX_STACK {
                return Err(PthError::PickleLimit {
                    pos: input.op_pos as u64,
                    limit: MAX_STACK,
                    what: "stack items",
                });
            }
        }
    }

    fn step(&mut self, op: u8, input: &mut Input<'_>) -> Result<()> {
        match op {
            PROTO => {
                let version = input.u8("PROTO")?;
                if !(2..=5).contains(&version) {
                    return Err(input.error(format!("unsupported pickle protocol {version}")));
                }
            }
            FRAME => {
                let len = u64::from_le_bytes(input.array("FRAME")?);
                let remaining = input.data.len().saturating_sub(input.pos) as u64;
                if len > remaining {
                    return Err(PthError::Truncated {
                        what: format!("pickle frame at byte {}", input.op_pos),
                        needed: len,
                        offset: input.pos as u64,
                        container: input.container,
                        end: input.data.len() as u64,
                    });
                }
            }
            MARK => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(PthError::PickleLimit {
                        pos: input.op_pos as u64,
                        limit: MAX_MARKS,
                        what: "nested marks",
                    });
                }
                self.marks.push(self.stack.len());
            }
            POP => {
                self.pop(input)?;
            }
            POP_MARK => {
                self.pop_mark(input)?;
            }
            DUP => {
                let top = self.top(input)?.clone();
                self.stack.push(top);
            }
            NONE => self.stack.push(Value::None),
            NEWTRUE => self.stack.push(Value::Bool(true)),
            NEWFALSE => self.stack.push(Value::Bool(false)),
            BININT => {
                let v = i32::from_le_bytes(input.array("BININT")?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            BININT1 => {
                let v = input.u8("BININT1")?;
                self.stack.push(Value::Int(i64::from(v)));
            }
            BININT2 => {
                let v = u16::from_le_bytes(input.array("BININT2")?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            LONG1 => {
                let n = input.u8("LONG1")?;
                let bytes = input.take(u64::from(n), "LONG1")?;
                self.charge(bytes.len() + 32, input)?;
                self.stack.push(le_int(bytes));
            }
            LONG4 => {
                let n = i32::from_le_bytes(input.array("LONG4")?);
                let n = u64::try_from(n)
                    .map_err(|_| input.error("LONG4 has a negative length".to_owned()))?;
                let bytes = input.take(n, "LONG4")?;
                self.charge(bytes.len() + 32, input)?;
                self.stack.push(le_int(bytes));
            }
            BINFLOAT => {
                let v = f64::from_be_bytes(input.array("BINFLOAT")?);
                self.stack.push(Value::Float(v));
            }
            SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 | SHORT_BINSTRING | BINSTRING => {
                let (len, what) = match op {
                    SHORT_BINUNICODE => {
                        (u64::from(input.u8("SHORT_BINUNICODE")?), "SHORT_BINUNICODE")
                    }
                    BINUNICODE => (
                        u64::from(u32::from_le_bytes(input.array("BINUNICODE")?)),
                        "BINUNICODE",
                    ),
                    BINUNICODE8 => (
                        u64::from_le_bytes(input.array("BINUNICODE8")?),
                        "BINUNICODE8",
                    ),
                    SHORT_BINSTRING => (u64::from(input.u8("SHORT_BINSTRING")?), "SHORT_BINSTRING"),
                    _ => {
                        let n = i32::from_le_bytes(input.array("BINSTRING")?);
                        let n = u64::try_from(n).map_err(|_| {
                            input.error("BINSTRING has a negative length".to_owned())
                        })?;
                        (n, "BINSTRING")
                    }
                };
                let bytes = input.take(len, what)?;
                self.charge(bytes.len() + 32, input)?;
                // Python 2 `str`s (BINSTRING) are decoded as UTF-8, as torch.load does.
                let s = String::from_utf8_lossy(bytes);
                self.stack.push(Value::Str(Rc::from(s.as_ref())));
            }
            SHORT_BINBYTES | BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                let (len, what) = match op {
                    SHORT_BINBYTES => (u64::from(input.u8("SHORT_BINBYTES")?), "SHORT_BINBYTES"),
                    BINBYTES => (
                        u64::from(u32::from_le_bytes(input.array("BINBYTES")?)),
                        "BINBYTES",
                    ),
                    BINBYTES8 => (u64::from_le_bytes(input.array("BINBYTES8")?), "BINBYTES8"),
                    _ => (u64::from_le_bytes(input.array("BYTEARRAY8")?), "BYTEARRAY8"),
                };
                let bytes = input.take(len, what)?;
                self.charge(bytes.len() + 32, input)?;
                self.stack.push(Value::Bytes(Rc::from(bytes)));
            }
            EMPTY_TUPLE => {
                let v = self.alloc(Obj::Tuple(Vec::new()), input)?;
                self.stack.push(v);
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = usize::from(op - TUPLE1 + 1);
                let floor = self.floor();
                if self.stack.len() < floor + n {
                    return Err(input.error("stack underflow".to_owned()));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                let v = self.alloc(Obj::Tuple(items), input)?;
                self.stack.push(v);
            }
            TUPLE => {
                let items = self.pop_mark(input)?;
                let v = self.alloc(Obj::Tuple(items), input)?;
                self.stack.push(v);
            }
            EMPTY_LIST => {
                let v = self.alloc(Obj::List(Vec::new()), input)?;
                self.stack.push(v);
            }
            LIST => {
                let items = self.pop_mark(input)?;
                let v = self.alloc(Obj::List(items), input)?;
                self.stack.push(v);
            }
            EMPTY_DICT => {
                let v = self.alloc(Obj::Dict(Box::default()), input)?;
                self.stack.push(v);
            }
            DICT => {
                let items = self.pop_mark(input)?;
                let mut dict = Dict::default();
                self.fill_dict(&mut dict, items, input)?;
                let v = self.alloc(Obj::Dict(Box::new(dict)), input)?;
                self.stack.push(v);
            }
            EMPTY_SET => {
                let v = self.alloc(Obj::Set(Vec::new()), input)?;
                self.stack.push(v);
            }
            FROZENSET => {
                let items = self.pop_mark(input)?;
                let v = self.alloc(Obj::Set(items), input)?;
                self.stack.push(v);
            }
            APPEND => {
                let item = self.pop(input)?;
                self.extend(vec![item], input)?;
            }
            APPENDS | ADDITEMS => {
                let items = self.pop_mark(input)?;
                self.extend(items, input)?;
            }
            SETITEM => {
                let value = self.pop(input)?;
                let key = self.pop(input)?;
                self.set_items(vec![key, value], input)?;
            }
            SETITEMS => {
                let items = self.pop_mark(input)?;
                self.set_items(items, input)?;
            }
            BINPUT => {
                let i = input.u8("BINPUT")?;
                self.memo_put(u32::from(i), input)?;
            }
            LONG_BINPUT => {
                let i = u32::from_le_bytes(input.array("LONG_BINPUT")?);
                self.memo_put(i, input)?;
            }
            MEMOIZE => {
                let i = u32::try_from(self.memo.len())
                    .map_err(|_| input.error("memo overflow".to_owned()))?;
                self.memo_put(i, input)?;
            }
            BINGET => {
                let i = input.u8("BINGET")?;
                self.memo_get(u32::from(i), input)?;
            }
            LONG_BINGET => {
                let i = u32::from_le_bytes(input.array("LONG_BINGET")?);
                self.memo_get(i, input)?;
            }
            GLOBAL => {
                let module = input.line("GLOBAL module")?;
                let name = input.line("GLOBAL")?;
                let v = self.global(Rc::from(module), Rc::from(name), input)?;
                self.stack.push(v);
            }
            STACK_GLOBAL => {
                let name = self.pop(input)?;
                let module = self.pop(input)?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(input.error("STACK_GLOBAL needs two strings".to_owned()));
                };
                // The limit of GLOBAL's lines: memoized strings are pushed for 2 bytes each,
                // and every STACK_GLOBAL reads its two names whole.
                if module.len() > MAX_GLOBAL_LINE || name.len() > MAX_GLOBAL_LINE {
                    return Err(input.error(format!(
                        "STACK_GLOBAL name longer than {MAX_GLOBAL_LINE} bytes"
                    )));
                }
                let v = self.global(module, name, input)?;
                self.stack.push(v);
            }
            REDUCE => {
                let args = self.pop(input)?;
                let callable = self.pop(input)?;
                let v = self.call(callable, args, 0, input)?;
                self.stack.push(v);
            }
            NEWOBJ => {
                let _args = self.pop(input)?;
                let class = self.pop(input)?;
                let v = self.opaque(class, input)?;
                self.stack.push(v);
            }
            NEWOBJ_EX => {
                let _kwargs = self.pop(input)?;
                let _args = self.pop(input)?;
                let class = self.pop(input)?;
                let v = self.opaque(class, input)?;
                self.stack.push(v);
            }
            BUILD => {
                // Sets an object's state. Nothing we read depends on it (an OrderedDict's
                // `_metadata`, a tensor subclass's attributes), so it is checked and dropped.
                let _state = self.pop(input)?;
                self.top(input)?;
            }
            BINPERSID => {
                let pid = self.pop(input)?;
                let v = self.persistent_load(&pid, input)?;
                self.stack.push(v);
            }
            _ => {
                return Err(PthError::UnsupportedOpcode {
                    opcode: op,
                    pos: input.op_pos as u64,
                });
            }
        }
        Ok(())
    }

    /// Stack height below which the current mark protects items.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, input: &Input<'_>) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(input.error("stack underflow".to_owned()));
        }
        self.stack
            .pop()
            .ok_or_else(|| input.error("stack underflow".to_owned()))
    }

    fn top(&self, input: &Input<'_>) -> Result<&Value> {
        if self.stack.len() <= self.floor() {
            return Err(input.error("stack underflow".to_owned()));
        }
        self.stack
            .last()
            .ok_or_else(|| input.error("stack underflow".to_owned()))
    }

    fn pop_mark(&mut self, input: &Input<'_>) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| input.error("no MARK to pop to".to_owned()))?;
        if mark > self.stack.len() {
            return Err(input.error("stack underflow".to_owned()));
        }
        Ok(self.stack.split_off(mark))
    }

    /// Accounts for `bytes` more memory, failing past [`MAX_PICKLE_MEMORY`]. Costs are
    /// estimates that include container slots, so a hostile pickle of tiny objects cannot
    /// make the machine use much more memory than that.
    fn charge(&mut self, bytes: usize, input: &Input<'_>) -> Result<()> {
        match self.memory.checked_add(bytes) {
            Some(total) if total <= MAX_PICKLE_MEMORY => {
                self.memory = total;
                Ok(())
            }
            _ => Err(PthError::PickleLimit {
                pos: input.op_pos as u64,
                limit: MAX_PICKLE_MEMORY,
                what: "bytes of unpickled objects",
            }),
        }
    }

    fn alloc(&mut self, obj: Obj, input: &Input<'_>) -> Result<Value> {
        const VALUE: usize = std::mem::size_of::<Value>();
        let payload = match &obj {
            Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) => v.capacity() * VALUE + ALLOCATION,
            Obj::Dict(d) => {
                std::mem::size_of::<Dict>() + d.entries.capacity() * 2 * VALUE + 2 * ALLOCATION
            }
            Obj::Global(g) => {
                std::mem::size_of::<Global>() + g.module.len() + g.name.len() + 3 * ALLOCATION
            }
            Obj::Tensor(t) => {
                let dims = t
                    .as_ref()
                    .as_ref()
                    .map_or(0, |t| t.shape.len() + t.stride.len());
                std::mem::size_of::<Result<TensorSpec, TensorProblem>>() + dims * 8 + 3 * ALLOCATION
            }
            Obj::Object { .. } | Obj::Storage(_) => 0,
        };
        self.charge(std::mem::size_of::<Obj>() + payload, input)?;
        if self.heap.len() >= MAX_HEAP {
            return Err(PthError::PickleLimit {
                pos: input.op_pos as u64,
                limit: MAX_HEAP,
                what: "objects",
            });
        }
        self.heap.push(obj);
        Ok(Value::Heap(self.heap.len() - 1))
    }

    fn memo_put(&mut self, index: u32, input: &Input<'_>) -> Result<()> {
        let top = self.top(input)?.clone();
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(PthError::PickleLimit {
                pos: input.op_pos as u64,
                limit: MAX_MEMO,
                what: "memo entries",
            });
        }
        if !self.memo.contains_key(&index) {
            self.charge(std::mem::size_of::<(u32, Value)>() + 8, input)?;
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32, input: &Input<'_>) -> Result<()> {
        let v = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| input.error(format!("memo entry {index} is not set")))?;
        self.stack.push(v);
        Ok(())
    }

    fn fill_dict(&mut self, dict: &mut Dict, items: Vec<Value>, input: &Input<'_>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(input.error("odd number of items for a dict".to_owned()));
        }
        let before = dict.entries.capacity();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            dict.insert(k, v);
        }
        // Entry slots the dict grew by, plus (generously) an index slot per new entry.
        let grown = dict.entries.capacity().saturating_sub(before);
        self.charge(
            grown * (2 * std::mem::size_of::<Value>() + 32) + ALLOCATION,
            input,
        )
    }

    /// `APPEND(S)` / `ADDITEMS` onto the object on top of the stack.
    fn extend(&mut self, items: Vec<Value>, input: &Input<'_>) -> Result<()> {
        let Value::Heap(i) = *self.top(input)? else {
            return Err(input.error("APPEND onto a value that is not a list".to_owned()));
        };
        let grown = match self.heap.get_mut(i) {
            Some(Obj::List(list) | Obj::Set(list)) => {
                let before = list.capacity();
                list.extend(items);
                list.capacity().saturating_sub(before)
            }
            // `list` subclasses we do not model: accepted and ignored.
            Some(Obj::Object { .. }) => 0,
            _ => return Err(input.error("APPEND onto a value that is not a list".to_owned())),
        };
        self.charge(grown * std::mem::size_of::<Value>() + ALLOCATION, input)
    }

    /// `SETITEM(S)` onto the object on top of the stack.
    fn set_items(&mut self, items: Vec<Value>, input: &Input<'_>) -> Result<()> {
        let Value::Heap(i) = *self.top(input)? else {
            return Err(input.error("SETITEM on a value that is not a dict".to_owned()));
        };
        let mut dict = match self.heap.get_mut(i) {
            Some(Obj::Dict(d)) => std::mem::take(d),
            Some(Obj::Object { items, .. }) => items.take().unwrap_or_default(),
            _ => return Err(input.error("SETITEM on a value that is not a dict".to_owned())),
        };
        let result = self.fill_dict(&mut dict, items, input);
        match self.heap.get_mut(i) {
            Some(Obj::Dict(d)) => *d = dict,
            Some(Obj::Object { items, .. }) => *items = Some(dict),
            _ => {}
        }
        result
    }

    fn global(&mut self, module: Rc<str>, name: Rc<str>, input: &Input<'_>) -> Result<Value> {
        let id = format!("{module}\n{name}");
        if let Some(v) = self.globals.get(&id) {
            return Ok(v.clone());
        }
        self.charge(id.len() + 64, input)?;
        let kind = GlobalKind::classify(&module, &name);
        let v = self.alloc(Obj::Global(Box::new(Global { module, name, kind })), input)?;
        self.globals.insert(id, v.clone());
        Ok(v)
    }

    fn opaque(&mut self, class: Value, input: &Input<'_>) -> Result<Value> {
        self.alloc(Obj::Object { class, items: None }, input)
    }

    fn global_kind(&self, v: &Value) -> Option<&GlobalKind> {
        match v {
            Value::Heap(i) => match self.heap.get(*i) {
                Some(Obj::Global(g)) => Some(&g.kind),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn sequence(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Heap(i) => match self.heap.get(*i) {
                Some(Obj::Tuple(items) | Obj::List(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }
}
