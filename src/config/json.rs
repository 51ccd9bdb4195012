//! JSON config files, as uWSGI reads them (core/json.c): the object named by the section
//! (`uwsgi` by default) holds the options; a string is the value, `true` is `1`, `false` and
//! `null` are `0`, a number is written as it is, and an array repeats the key once per item.

use super::ini::Line;

#[derive(Debug)]
enum Value {
    Scalar(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value, usize)>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// How deep arrays and objects may nest before the file is refused.
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn line(&self) -> usize {
        memchr::memchr_iter(b'\n', &self.s[..self.i.min(self.s.len())]).count() + 1
    }

    fn err(&self, what: &str) -> String {
        format!("invalid JSON at line {}: {what}", self.line())
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", char::from(c))))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Value::Object(items));
                }
                loop {
                    self.ws();
                    let line = self.line();
                    let key = self.string()?;
                    self.eat(b':')?;
                    items.push((key, self.value(depth + 1)?, line));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::Object(items));
                        }
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => Ok(Value::Scalar(self.string()?)),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || b"+-.".contains(&self.s[self.i]))
                {
                    self.i += 1;
                }
                let word = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                match word.as_str() {
                    "true" => Ok(Value::Scalar("1".to_owned())),
                    "false" | "null" => Ok(Value::Scalar("0".to_owned())),
                    w if !w.is_empty() && w.parse::<f64>().is_ok() => Ok(Value::Scalar(word)),
                    _ => Err(self.err("expected a value")),
                }
            }
            None => Err(self.err("unexpected end")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match c {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).unwrap_or_default();
                            let cp = std::str::from_utf8(hex)
                                .ok()
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.err("bad \\u escape"))?;
                            self.i += 4;
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }
}

/// The options in the `section` object of JSON text, in file order.
pub fn parse_json(text: &str, section: &str) -> Result<Vec<Line>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let root = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing data"));
    }
    let Value::Object(top) = root else {
        return Err(format!("you must define an object named {section}"));
    };
    let Some((_, Value::Object(items), _)) = top.into_iter().find(|(k, _, _)| k == section) else {
        return Err(format!("you must define an object named {section}"));
    };
    let mut out = Vec::new();
    for (k, v, line) in items {
        match v {
            Value::Scalar(s) => out.push((k, s, line)),
            Value::Array(a) => {
                for item in a {
                    if let Value::Scalar(s) = item {
                        out.push((k.clone(), s, line));
                    }
                }
            }
            Value::Object(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rules() {
        let text = r#"{"other": {"a": 1}, "uwsgi": {"socket": ":3031", "master": true,
            "vacuum": false, "x": null, "processes": 4, "env": ["A=1", "B=\"2\""], "o": {}}}"#;
        let got = parse_json(text, "uwsgi").unwrap();
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|(k, v, _)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("socket", ":3031"),
                ("master", "1"),
                ("vacuum", "0"),
                ("x", "0"),
                ("processes", "4"),
                ("env", "A=1"),
                ("env", "B=\"2\"")
            ]
        );
    }

    #[test]
    fn malformed_json() {
        for bad in [
            "",
            "{",
            "{\"uwsgi\": {\"a\": }}",
            "[1]",
            "{\"x\": {}}",
            "{\"uwsgi\": {}} x",
        ] {
            assert!(parse_json(bad, "uwsgi").is_err(), "{bad}");
        }
        let deep = "[".repeat(1000);
        assert!(parse_json(&deep, "uwsgi").is_err());
    }
}
