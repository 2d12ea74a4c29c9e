//! A small position-tracking JSON scanner: records the line:column of every
//! value and every object key by JSON pointer, so semantic diagnostics (found
//! on the typed model) can point into the file. Runs only when there is
//! something to report.

use std::collections::HashMap;

use crate::diag::push_token;

/// Deeper documents are not indexed further (serde_json stops at 128 anyway).
const MAX_DEPTH: usize = 256;

/// 1-based line and byte column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Positions of values and keys by pointer.
#[derive(Debug, Default)]
pub struct Positions {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

impl Positions {
    /// Scans `text`; on malformed input it keeps what it found so far.
    pub fn scan(text: &str) -> Positions {
        Self::scan_inner(text, None)
    }

    /// Like `scan`, but records only `wanted` pointers and their ancestors and
    /// skips every other subtree: fast enough to locate a few diagnostics in
    /// a large file.
    pub fn scan_for(text: &str, wanted: &[&str]) -> Positions {
        Self::scan_inner(text, Some(wanted))
    }

    fn scan_inner(text: &str, wanted: Option<&[&str]>) -> Positions {
        let mut s = Scanner {
            b: text.as_bytes(),
            i: 0,
            line: 1,
            line_start: 0,
            ptr: String::new(),
            out: Positions::default(),
            wanted,
        };
        s.skip_ws();
        let _ = s.value(0);
        s.out
    }

    /// Position of the value at `pointer`.
    pub fn value(&self, pointer: &str) -> Option<Pos> {
        self.values.get(pointer).copied()
    }

    /// Position of the object key whose member is at `pointer`.
    pub fn key(&self, pointer: &str) -> Option<Pos> {
        self.keys.get(pointer).copied()
    }

    /// The value at `pointer`, or of its nearest ancestor present in the file
    /// (a defaulted field has no position of its own).
    pub fn locate(&self, pointer: &str) -> Option<Pos> {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.value(p) {
                return Some(pos);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
    line_start: usize,
    ptr: String,
    out: Positions,
    wanted: Option<&'a [&'a str]>,
}

type Res = Result<(), ()>;

impl Scanner<'_> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.i - self.line_start + 1,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'\n' => {
                    self.i += 1;
                    self.line += 1;
                    self.line_start = self.i;
                }
                b' ' | b'\t' | b'\r' => self.i += 1,
                _ => break,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Res {
        if depth > MAX_DEPTH {
            return Err(());
        }
        if !self.is_wanted() {
            return self.skip_value();
        }
        let pos = self.pos();
        self.out.values.insert(self.ptr.clone(), pos);
        match self.b.get(self.i).copied().ok_or(())? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(|_| ()),
            _ => {
                // number, true, false, null: runs up to a delimiter
                while let Some(&c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.i += 1;
                }
                Ok(())
            }
        }
    }

    fn object(&mut self, depth: usize) -> Res {
        self.i += 1;
        self.skip_ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            let key_pos = self.pos();
            if self.b.get(self.i) != Some(&b'"') {
                return Err(());
            }
            let key = self.string()?;
            let base = self.ptr.len();
            push_token(&mut self.ptr, &key);
            if self.is_wanted() {
                self.out.keys.insert(self.ptr.clone(), key_pos);
            }
            self.skip_ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(());
            }
            self.i += 1;
            self.skip_ws();
            let r = self.value(depth + 1);
            self.ptr.truncate(base);
            r?;
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Res {
        self.i += 1;
        self.skip_ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            self.skip_ws();
            let base = self.ptr.len();
            self.ptr.push('/');
            self.ptr.push_str(itoa(index, &mut [0u8; 20]));
            let r = self.value(depth + 1);
            self.ptr.truncate(base);
            r?;
            index += 1;
            self.skip_ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    /// Whether the current pointer is, or is an ancestor of, a wanted one.
    fn is_wanted(&self) -> bool {
        let Some(wanted) = self.wanted else {
            return true;
        };
        let p = self.ptr.as_str();
        wanted
            .iter()
            .any(|w| w.starts_with(p) && (w.len() == p.len() || w.as_bytes()[p.len()] == b'/'))
    }

    /// Skips one value without recording anything, keeping line counts.
    fn skip_value(&mut self) -> Res {
        let mut depth = 0usize;
        loop {
            let c = self.b.get(self.i).copied().ok_or(())?;
            match c {
                b'"' => {
                    self.i += 1;
                    loop {
                        match self.b.get(self.i).copied().ok_or(())? {
                            b'"' => break,
                            b'\\' => self.i += 2,
                            b'\n' => return Err(()),
                            _ => self.i += 1,
                        }
                    }
                    self.i += 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return Ok(());
                    }
                    depth -= 1;
                    self.i += 1;
                }
                b',' if depth == 0 => return Ok(()),
                b'\n' => {
                    self.i += 1;
                    self.line += 1;
                    self.line_start = self.i;
                }
                _ => self.i += 1,
            }
            if depth == 0 && matches!(c, b'"' | b'}' | b']') {
                return Ok(());
            }
        }
    }

    /// Reads a string starting at the opening quote; returns its decoded text.
    fn string(&mut self) -> Result<String, ()> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.b.get(self.i).copied().ok_or(())? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                b'\n' => return Err(()),
                _ => self.i += 1,
            }
        }
        let raw = self.b.get(start..self.i).ok_or(())?;
        self.i += 1;
        if !escaped {
            return std::str::from_utf8(raw).map(str::to_owned).map_err(|_| ());
        }
        let quoted = self.b.get(start - 1..self.i).ok_or(())?;
        serde_json::from_slice::<String>(quoted).map_err(|_| ())
    }
}

fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_values_and_keys() {
        let text = "{\n  \"a/b\": [1, {\"x~\": \"v\\n\"}],\n  \"c\": null\n}";
        let p = Positions::scan(text);
        assert_eq!(p.value(""), Some(Pos { line: 1, column: 1 }));
        assert_eq!(p.key("/a~1b"), Some(Pos { line: 2, column: 3 }));
        assert_eq!(
            p.value("/a~1b"),
            Some(Pos {
                line: 2,
                column: 10
            })
        );
        assert_eq!(
            p.value("/a~1b/0"),
            Some(Pos {
                line: 2,
                column: 11
            })
        );
        assert_eq!(
            p.value("/a~1b/1/x~0"),
            Some(Pos {
                line: 2,
                column: 21
            })
        );
        assert_eq!(p.value("/c"), Some(Pos { line: 3, column: 8 }));
        assert_eq!(
            p.locate("/c/missing/deeper"),
            Some(Pos { line: 3, column: 8 })
        );
    }

    #[test]
    fn targeted_scan_matches_full_scan() {
        let text = "{\n \"a\": {\"x\": [1, 2]},\n \"b\": [\"s,]}\", {\"y\": true}],\n \"c\": 3\n}";
        let full = Positions::scan(text);
        let some = Positions::scan_for(text, &["/b/1/y", "/c"]);
        for p in ["", "/b", "/b/1", "/b/1/y", "/c"] {
            assert_eq!(some.value(p), full.value(p), "{p}");
        }
        assert_eq!(some.value("/a"), None);
        assert_eq!(full.value("/c"), Some(Pos { line: 4, column: 7 }));
    }

    #[test]
    fn survives_garbage() {
        for t in ["", "{", "[1,", "{\"a\"", "\"\\", "{\"a\":[[[[", "\u{1F600}"] {
            let _ = Positions::scan(t);
            let _ = Positions::scan_for(t, &["/a/0"]);
        }
    }
}
