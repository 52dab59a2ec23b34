//! `jmesPath` (issue 16): values of a secret's JSON written to files of their own, named as the
//! AWS provider names the setting so that users moving from AWS find it.
//!
//! The `jmespath` crate is the JMESPath project's own Rust implementation: it passes the
//! language's compliance suite, depends on serde only, and had a release in the project's edition
//! (2024), so it is used rather than a hand-written subset.
//!
//! Secret material: the parsed JSON and the crate's value tree are plain heap data, dropped (not
//! zeroed) at the end of [`extract`]; only the bytes that become the file are zeroized. Error texts
//! name the object and the expression, never the value.

use zeroize::Zeroizing;

/// Extracting failed; the texts never quote the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    /// The secret's value is not JSON.
    #[error(
        "jmesPath needs the secret's value to be JSON, but it is not ({0}): store JSON such as {{\"username\": \"...\"}} or remove jmesPath"
    )]
    NotJson(String),
    /// The expression does not compile (checked when the class is parsed too).
    #[error("jmesPath path \"{path}\" is not a valid JMESPath expression: {reason}")]
    Invalid {
        /// The expression.
        path: String,
        /// The parser's reason (about the expression only).
        reason: String,
    },
    /// The expression failed on this value (e.g. a function given the wrong type).
    #[error(
        "jmesPath path \"{0}\" could not be evaluated on the secret's JSON (a function given a value of the wrong type?)"
    )]
    Evaluation(String),
    /// The expression matched nothing (null).
    #[error(
        "jmesPath path \"{0}\" matches nothing in the secret's JSON: check the field names (they are case-sensitive)"
    )]
    NoMatch(String),
}

/// Longest expression accepted.
const MAX_EXPRESSION_LEN: usize = 512;
/// Deepest nesting of `(`, `[` and `{` accepted. The crate's parser and interpreter recurse per
/// level, so an expression like `((((…a…))))` would overflow the stack and abort the process.
const MAX_NESTING: usize = 16;
/// Most operator characters (`.`, `|`, `&`, `[`, `(`, `{`, `,`, `!`, `<`, `>`, `=`) accepted:
/// chains like `a.a.a…` or `a || a || …` also recurse once per step (256 steps overflowed a 2 MiB
/// stack in a debug build).
const MAX_OPERATORS: usize = 48;

/// Refuses expressions too long or too deeply nested to evaluate safely.
fn check_bounds(path: &str) -> Result<(), String> {
    if path.len() > MAX_EXPRESSION_LEN {
        return Err(format!(
            "longer than {MAX_EXPRESSION_LEN} characters; extract smaller pieces"
        ));
    }
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None::<char>);
    let mut operators = 0usize;
    let mut escaped = false;
    for c in path.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if matches!(
            c,
            '.' | '|' | '&' | '[' | '(' | '{' | ',' | '!' | '<' | '>' | '='
        ) {
            operators += 1;
        }
        match c {
            '\'' | '"' | '`' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if operators > MAX_OPERATORS {
        return Err(format!(
            "more than {MAX_OPERATORS} operators; extract smaller pieces"
        ));
    }
    if deepest > MAX_NESTING {
        return Err(format!(
            "nested deeper than {MAX_NESTING} levels of (), [] or {{}}"
        ));
    }
    Ok(())
}

/// Compiles an expression (for validation); the error is about the expression only.
pub fn compile(path: &str) -> Result<(), String> {
    check_bounds(path)?;
    jmespath::compile(path)
        .map(|_| ())
        .map_err(|e| first_line(&e.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

/// The file bytes of `path` over the JSON `value`: a string as its text, anything else (number,
/// boolean, object, list) as compact JSON.
pub fn extract(value: &[u8], path: &str) -> Result<Zeroizing<Vec<u8>>, ExtractError> {
    let json: serde_json::Value = serde_json::from_slice(value).map_err(|e| {
        ExtractError::NotJson(format!(
            "{} at line {} column {}",
            category(&e),
            e.line(),
            e.column()
        ))
    })?;
    check_bounds(path).map_err(|reason| ExtractError::Invalid {
        path: path.to_owned(),
        reason,
    })?;
    let expr = jmespath::compile(path).map_err(|e| ExtractError::Invalid {
        path: path.to_owned(),
        reason: first_line(&e.to_string()),
    })?;
    let data = jmespath::Variable::try_from(json)
        .map_err(|_| ExtractError::Evaluation(path.to_owned()))?;
    let found = expr
        .search(data)
        .map_err(|_| ExtractError::Evaluation(path.to_owned()))?;
    if found.is_null() {
        return Err(ExtractError::NoMatch(path.to_owned()));
    }
    Ok(Zeroizing::new(match found.as_string() {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            serde_json::to_vec(&*found).map_err(|_| ExtractError::Evaluation(path.to_owned()))?
        }
    }))
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "it ends too early",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "unreadable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str, p: &str) -> Result<String, ExtractError> {
        extract(v.as_bytes(), p).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn strings_as_text_other_values_as_json() {
        let v = r#"{"username":"app","port":5432,"tls":true,"hosts":["a","b"],"db":{"name":"x"}}"#;
        assert_eq!(text(v, "username").unwrap_or_default(), "app");
        assert_eq!(text(v, "port").unwrap_or_default(), "5432");
        assert_eq!(text(v, "tls").unwrap_or_default(), "true");
        assert_eq!(text(v, "hosts").unwrap_or_default(), r#"["a","b"]"#);
        assert_eq!(text(v, "db.name").unwrap_or_default(), "x");
        assert_eq!(text(v, "hosts[1]").unwrap_or_default(), "b");
    }

    #[test]
    fn errors_name_the_path_never_the_value() {
        let e = text(r#"{"password":"hunter2"}"#, "Password").err();
        assert_eq!(e, Some(ExtractError::NoMatch("Password".into())));
        let e = text("hunter2-not-json", "a")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not") && !e.contains("hunter2"), "{e}");
        let e = text(r#"{"a":"hunter2"}"#, "abs(a)")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("abs(a)") && !e.contains("hunter2"), "{e}");
        assert!(compile("a.[").is_err());
        assert!(
            compile(r#"a."b[[[[[[[[[[[[[[[[[[[[" "#.trim()).is_ok(),
            "brackets inside quotes do not count"
        );
        assert!(compile("a.b[0]").is_ok());
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    /// A class must not be able to crash the provider: deep nesting is refused before the
    /// (recursive) parser sees it, and what passes the bounds evaluates on a test thread's stack.
    #[test]
    fn deep_or_long_expressions_are_refused_not_a_stack_overflow() {
        for n in [17usize, 1_000, 100_000] {
            for (open, close) in [("(", ")"), ("[", "]"), ("{a: ", "}")] {
                let expr = format!("{}a{}", open.repeat(n), close.repeat(n));
                let e = compile(&expr).err().unwrap_or_default();
                assert!(
                    e.contains("nested deeper") || e.contains("longer than"),
                    "{n}: {e}"
                );
            }
        }
        assert!(compile(&("a.".repeat(300) + "a")).is_err_and(|e| e.contains("longer than")));
        assert!(compile(&("a.".repeat(49) + "a")).is_err_and(|e| e.contains("operators")));
    }

    #[test]
    fn deepest_parens() {
        let value = br#"{"a":{"a":{"a":"x"}}}"#;
        let deepest = format!("{}a{}", "(".repeat(16), ")".repeat(16));
        assert_eq!(
            extract(value, &deepest).map(|v| v.to_vec()).ok(),
            Some(br#"{"a":{"a":"x"}}"#.to_vec())
        );
    }

    #[test]
    fn longest_chain() {
        let value = br#"{"a":{"a":{"a":"x"}}}"#;
        // The longest chains within the bounds evaluate on a test thread's 2 MiB stack.
        for longest in [
            "a.".repeat(48) + "a",
            "a || ".repeat(24) + "b",
            "a && ".repeat(24) + "a",
            "a | ".repeat(48) + "b",
            "[".repeat(16) + "a" + &"]".repeat(16) + &".a".repeat(32),
        ] {
            assert!(compile(&longest).is_ok(), "{longest}");
            let _ = extract(value, &longest);
        }
    }

    #[test]
    fn nested_lists() {
        let value = br#"{"a":{"a":{"a":"x"}}}"#;
        let nested_lists = format!("{}a{}", "[".repeat(16), "]".repeat(16));
        let _ = extract(value, &nested_lists);
    }
}
