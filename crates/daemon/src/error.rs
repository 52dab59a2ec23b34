//! One way to turn an error and its causes into the text a user reads (a gRPC status message, a
//! Kubernetes Event, a log field).
//!
//! Error types in this workspace keep their cause as `#[source]` instead of flattening it into a
//! `String`, so that code can still look at it (a 409 from the API server is not a 503). Some of
//! them also show the cause in their own message, where upstream's wording does (`..., error:
//! <cause>`); the renderer therefore appends a cause only when the text so far does not already
//! end with it.

use std::error::Error;
use std::fmt;

/// The error's message followed by each cause not already shown, joined with `": "`.
pub fn render(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    // Bounded: a cyclic or absurdly deep chain stops after this many causes.
    for _ in 0..16 {
        let Some(cause) = next else { break };
        let text = cause.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// `Display` of [`render`], for log fields: `error = %daemon::error::Chain(&e)`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Io;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to reach the API server")]
    struct Mid(#[source] Io);

    #[derive(Debug, thiserror::Error)]
    #[error("failed to record status of pod-a")]
    struct Top(#[source] Mid);

    #[derive(Debug, thiserror::Error)]
    #[error("failed to get object, error: {0}")]
    struct Inline(#[source] Io);

    #[test]
    fn causes_are_appended_in_order() {
        assert_eq!(
            render(&Top(Mid(Io))),
            "failed to record status of pod-a: failed to reach the API server: connection refused"
        );
        assert_eq!(
            Chain(&Mid(Io)).to_string(),
            "failed to reach the API server: connection refused"
        );
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        assert_eq!(
            render(&Inline(Io)),
            "failed to get object, error: connection refused"
        );
    }
}
