//! `templates` (issue 16): files rendered from the mounted files, e.g. a `.env`, an
//! `application.properties` or a JSON document built from several secrets.
//!
//! Engine: minijinja (Jinja2 syntax, maintained, few dependencies) built without its loader
//! features, so `include`/`import`/`extends` find nothing: a template reads only the `files` map
//! it is given, never the filesystem or the network. Undefined values are errors (a typo fails
//! the mount instead of writing an empty value), evaluation is bounded by fuel (loops) and
//! minijinja's recursion limit, and the output by [`MAX_OUTPUT_BYTES`]. Errors name the template's
//! path, the line and the kind of problem, never a value.
//!
//! In a template, `files` maps each mounted file's path (objectAlias or objectName, version folders
//! and selection folders included) to its text: `{{ files["db-password"] }}`,
//! `{{ files["app/db"] | tojson }}`. Files that are not UTF-8 text (a binary PFX) are left out.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use zeroize::Zeroizing;

/// Largest rendered file.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Longest template text.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// Stack of the thread templates are parsed and rendered on. minijinja's parser and evaluator
/// recurse per nesting level (e.g. a run of unary `-`), and a few thousand levels overflow a
/// default 2 MiB stack, which aborts the whole process; [`MAX_TEMPLATE_BYTES`] bounds the depth and
/// this stack holds it (the deepest templates within the limit need about 32 MiB in a debug
/// build, far less in release; only the pages used are ever touched).
const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Runs `f` on a thread of its own with a [`STACK_BYTES`] stack.
fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    std::thread::Builder::new()
        .name("template".into())
        .stack_size(STACK_BYTES)
        .spawn(f)
        .map_err(|e| format!("cannot start the template thread: {e}"))?
        .join()
        .map_err(|_| "the template engine failed".to_owned())
}
/// Evaluation budget of one render (minijinja "fuel": roughly one unit per instruction).
const FUEL: u64 = 1_000_000;

/// Rendering failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("template \"{path}\": {reason}")]
pub struct TemplateError {
    /// The template's `path`.
    pub path: String,
    /// What went wrong (no values).
    pub reason: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    // A `.env` or properties file keeps the final newline its template has.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

/// A problem's description: kind, line, and for problems of the template's own text the detail.
fn describe(e: &minijinja::Error, files: Option<&BTreeMap<String, Value>>) -> String {
    let mut s = e.kind().to_string();
    let own_text = matches!(
        e.kind(),
        ErrorKind::SyntaxError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownMethod
            | ErrorKind::TemplateNotFound
            | ErrorKind::TooManyArguments
            | ErrorKind::MissingArgument
    );
    if own_text && let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    match e.kind() {
        ErrorKind::UndefinedError => {
            if let Some(files) = files {
                let names: Vec<&str> = files.keys().map(String::as_str).collect();
                s.push_str(&format!(
                    ": refer to a mounted file as files[\"name\"]; the files are {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ));
            }
        }
        ErrorKind::OutOfFuel => s.push_str(": the template does too much work; simplify its loops"),
        ErrorKind::TemplateNotFound => {
            s.push_str(": templates cannot include other templates or files")
        }
        _ => {}
    }
    s
}

/// Checks a template's size and syntax (when the class is parsed).
pub fn check(source: &str) -> Result<(), String> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "the template is longer than {MAX_TEMPLATE_BYTES} bytes; split it"
        ));
    }
    let source = source.to_owned();
    on_big_stack(move || {
        environment()
            .template_from_str(&source)
            .map(|_| ())
            .map_err(|e| describe(&e, None))
    })?
}

/// The context of every template of a mount: mounted path → text.
pub fn files_context<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<String, Value> {
    files
        .into_iter()
        .filter_map(|(p, c)| {
            std::str::from_utf8(c)
                .ok()
                .map(|t| (p.to_owned(), Value::from(t)))
        })
        .collect()
}

/// Rendered files: path and bytes.
pub type RenderedTemplates = Vec<(String, Zeroizing<Vec<u8>>)>;

/// Renders every `(path, template)` over `files`, in order, on one thread with a large stack
/// (blocking: call it from the blocking pool).
pub fn render_all(
    templates: Vec<(String, String)>,
    files: BTreeMap<String, Value>,
) -> Result<RenderedTemplates, TemplateError> {
    let first = templates.first().map(|t| t.0.clone()).unwrap_or_default();
    on_big_stack(move || {
        templates
            .into_iter()
            .map(|(path, source)| render(&path, &source, &files).map(|c| (path, c)))
            .collect()
    })
    .map_err(|reason| TemplateError {
        path: first,
        reason,
    })?
}

/// Renders `source` (at `path`) over `files` on the calling thread (see [`render_all`]).
fn render(
    path: &str,
    source: &str,
    files: &BTreeMap<String, Value>,
) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    let fail = |reason: String| TemplateError {
        path: path.to_owned(),
        reason,
    };
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(fail(format!(
            "the template is longer than {MAX_TEMPLATE_BYTES} bytes; split it"
        )));
    }
    let env = environment();
    let template = env
        .template_from_str(source)
        .map_err(|e| fail(describe(&e, None)))?;
    let mut ctx = BTreeMap::new();
    ctx.insert("files", Value::from(files.clone()));
    let out = template
        .render(Value::from(ctx))
        .map(|s| Zeroizing::new(s.into_bytes()))
        .map_err(|e| fail(describe(&e, Some(files))))?;
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(fail(format!(
            "the rendered file is larger than {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BTreeMap<String, Value> {
        files_context([
            ("db-user", b"app".as_slice()),
            ("db-password", b"hunter2".as_slice()),
            ("bin", [0xff, 0xfe].as_slice()),
        ])
    }

    fn out(src: &str) -> Result<String, TemplateError> {
        render_all(vec![("app.env".into(), src.into())], ctx())
            .map(|mut v| String::from_utf8_lossy(&v.remove(0).1).into_owned())
    }

    #[test]
    fn renders_files_by_path() {
        assert_eq!(
            out("USER={{ files[\"db-user\"] }}\nPASS={{ files['db-password'] }}\n")
                .ok()
                .as_deref(),
            Some("USER=app\nPASS=hunter2\n")
        );
        assert_eq!(
            out("{% for k, v in files|items %}{{ k }};{% endfor %}")
                .ok()
                .as_deref(),
            Some("db-password;db-user;"),
            "non-UTF-8 files are left out"
        );
    }

    #[test]
    fn bad_templates_are_errors_naming_path_and_line_but_no_value() {
        let e = out("A={{ files['nope'] }}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("app.env") && e.contains("undefined") && e.contains("db-user"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = out("{% include 'x' %}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        // Built without multi-template support, `include` is not even a statement.
        assert!(e.contains("unknown statement include"), "{e}");
        let e =
            out("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(e.contains("too much work"), "{e}");
        let e = out("{{ files['db-password'] | int + 1 }}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(check("{{ unclosed").is_err_and(|e| e.contains("syntax error")));
        assert!(check("{{ files['a'] }}").is_ok());
        // Deep nesting ends in an error or a value, never a stack overflow: the size limit bounds
        // the depth, and the template thread's stack holds it.
        for (o, c) in [
            ("(", ")"),
            ("[", "]"),
            ("{'a': ", "}"),
            ("-", ""),
            ("not ", ""),
        ] {
            // As deep as the size limit allows, and past it.
            let fits = (MAX_TEMPLATE_BYTES - 10) / (o.len() + c.len());
            for n in [fits, 100_000] {
                let src = format!("{{{{ {}1{} }}}}", o.repeat(n), c.repeat(n));
                if n > fits {
                    assert!(check(&src).is_err_and(|e| e.contains("longer than")));
                }
                let _ = check(&src);
                let _ = out(&src);
            }
        }
        let n = MAX_TEMPLATE_BYTES / 24;
        let blocks = "{% if true %}".repeat(n) + &"{% endif %}".repeat(n);
        let _ = check(&blocks);
        let _ = out(&blocks);
        let chain = format!("{{{{ 1{} }}}}", " + 1".repeat(MAX_TEMPLATE_BYTES / 4 - 4));
        let _ = out(&chain);
        assert_eq!(
            out("{\"user\": {{ files['db-user'] | tojson }}}")
                .ok()
                .as_deref(),
            Some("{\"user\": \"app\"}")
        );
    }
}
