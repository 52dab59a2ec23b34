//! Structured inputs from fuzz bytes: a thin layer over [`arbitrary::Unstructured`] that never
//! fails (an exhausted input yields empty or first choices) and mixes plausible values with
//! arbitrary ones, so most inputs get past the first validation while every byte still matters.

use arbitrary::Unstructured;

/// A generator over one input.
pub struct Gen<'a> {
    u: Unstructured<'a>,
}

impl<'a> Gen<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            u: Unstructured::new(data),
        }
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn u32(&mut self) -> u32 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn i32(&mut self) -> i32 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn i64(&mut self) -> i64 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn bool(&mut self) -> bool {
        self.u.arbitrary().unwrap_or(false)
    }

    /// True with probability `n / d`; when the input is used up, the likelier outcome (so a short
    /// input still makes a plausible case).
    pub fn chance(&mut self, n: u8, d: u8) -> bool {
        if self.u.is_empty() {
            return u16::from(n) * 2 > u16::from(d);
        }
        self.u.ratio(n, d).unwrap_or(false)
    }

    /// An index below `n` (0 when `n` is 0 or the input is used up).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        self.u.choose_index(n).unwrap_or(0)
    }

    /// One of `xs` (the first when the input is used up).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// Arbitrary bytes, at most `max`.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.u.arbitrary_len::<u8>().unwrap_or(0).min(max);
        self.u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// An arbitrary string (valid UTF-8), at most `max` bytes.
    pub fn string(&mut self, max: usize) -> String {
        let s: &str = self.u.arbitrary().unwrap_or("");
        let mut end = s.len().min(max);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    }

    /// Mostly one of `plausible` (the first when the input is used up), sometimes an arbitrary
    /// string, sometimes a plausible one with arbitrary text around it.
    pub fn text(&mut self, plausible: &[&str]) -> String {
        match self.byte() % 8 {
            7 => self.string(64),
            6 => {
                let p = self.pick(plausible);
                let pre = self.string(8);
                let post = self.string(8);
                format!("{pre}{p}{post}")
            }
            _ => self.pick(plausible).to_owned(),
        }
    }

    /// The rest of the input.
    pub fn rest(self) -> &'a [u8] {
        self.u.take_rest()
    }
}

/// Splits `data` at the first `sep` byte: (before, after); no separator → (all, empty).
pub fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// `text` as a YAML double-quoted scalar that any YAML 1.2 reader reads back exactly: printable
/// ASCII as is, everything else escaped.
pub fn yaml_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}
