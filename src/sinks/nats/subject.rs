//! What each event is published as: its subject (a template over the event's
//! JSON fields, every value made one safe subject token) and its
//! `Nats-Msg-Id` (the same for the same event however often it is sent, so
//! that JetStream stores a retried batch once). No I/O.

use std::fmt::Write as _;

use minijinja::Environment;
use sha2::{Digest, Sha256};

use crate::event::{Event, Field};

/// Longest subject herald publishes, in bytes (the server's control line
/// holds the subject, a reply subject and the sizes within 4 KiB).
const SUBJECT_MAX: usize = 1024;
/// Longest token a field's value becomes, in bytes.
const TOKEN_MAX: usize = 128;

/// A compiled subject template.
#[derive(Debug)]
pub struct SubjectTemplate {
    env: Environment<'static>,
    /// The template's first tokens that no field changes, with their
    /// trailing '.'; `None` when the first token is already a field's.
    prefix: Option<String>,
}

impl SubjectTemplate {
    /// Compiles `source` and checks that it renders a valid subject.
    ///
    /// # Errors
    ///
    /// What is wrong, for the `subject` key.
    pub fn new(source: &str) -> Result<SubjectTemplate, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.set_formatter(|out, _state, value| {
            let text = if value.is_undefined() || value.is_none() {
                String::new()
            } else {
                value.to_string()
            };
            out.write_str(&token(&text)).map_err(|err| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, err.to_string())
            })
        });
        env.add_template_owned("subject", source.to_string())
            .map_err(|err| format!("does not compile: {err:#}"))?;
        let template = SubjectTemplate {
            env,
            prefix: fixed_prefix(source),
        };
        // Every field present: what the template makes of a full event.
        let mut sample = serde_json::Map::new();
        for name in [
            "type", "source", "tag", "layout", "level", "outcome", "time", "sender",
        ] {
            sample.insert(name.into(), "x".into());
        }
        for field in Field::ALL {
            sample.insert(field.name().into(), "x".into());
        }
        template
            .render_context(&serde_json::Value::Object(sample))
            .map_err(|err| format!("{err} (rendered for an event with every field)"))?;
        Ok(template)
    }

    /// The template's fixed first tokens followed by '.', e.g. `qliksense.`.
    pub fn fixed_prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The subject of the event whose JSON is `json`.
    ///
    /// # Errors
    ///
    /// When the JSON is not an object (never, for an event's), the template
    /// fails or renders no valid subject.
    pub fn render(&self, json: &[u8]) -> Result<String, String> {
        let context: serde_json::Value =
            serde_json::from_slice(json).map_err(|err| format!("event JSON: {err}"))?;
        self.render_context(&context)
    }

    fn render_context(&self, context: &serde_json::Value) -> Result<String, String> {
        let rendered = self
            .env
            .get_template("subject")
            .and_then(|t| {
                t.render(minijinja::value::Value::from(minijinja::value::Serde(
                    context,
                )))
            })
            .map_err(|err| format!("the subject template failed: {err:#}"))?;
        let subject = rendered.trim();
        check_subject(subject)?;
        Ok(subject.to_string())
    }
}

/// `value` as one subject token: '.', '*', '>', whitespace and control
/// characters become '_', and so does a leading '$' (subjects starting with
/// '$' are the server's own, `$JS.API...`); nothing becomes `_`, and it is cut
/// to [`TOKEN_MAX`] bytes.
pub fn token(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(TOKEN_MAX));
    for c in value.chars() {
        let reserved = c == '$' && out.is_empty();
        let c = if reserved || matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > TOKEN_MAX {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Checks a subject herald publishes to.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the subject template rendered an empty subject".into());
    }
    if subject.len() > SUBJECT_MAX {
        return Err(format!(
            "the subject is {} bytes; herald publishes at most {SUBJECT_MAX}",
            subject.len()
        ));
    }
    if let Some(c) = subject
        .chars()
        .find(|&c| matches!(c, '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "the subject {subject:?} contains {c:?}, which a published subject cannot have"
        ));
    }
    if subject.starts_with('$') {
        return Err(format!(
            "the subject {subject:?} starts with '$', which marks the server's own subjects"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!(
            "the subject {subject:?} has an empty token (two dots in a row, or a dot at an end)"
        ));
    }
    Ok(())
}

/// The template's literal text up to the last '.' before its first tag,
/// when that is at least one whole token.
fn fixed_prefix(source: &str) -> Option<String> {
    let literal = source.find('{').map_or(source, |at| &source[..at]);
    let literal = literal.trim_start();
    let end = literal.rfind('.')?;
    let prefix = &literal[..=end];
    check_subject(&prefix[..end]).ok()?;
    Some(prefix.to_string())
}

/// Whether `name` can name a stream.
pub fn is_valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| {
            matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control()
        })
}

/// The event's `Nats-Msg-Id`: a digest of when and from where herald received
/// it, its number in that run and its text, so the same event (retried, or
/// read back from the disk buffer after a restart) always has the same id and
/// two events never share one.
pub fn message_id(event: &Event) -> String {
    let mut digest = Sha256::new();
    digest.update(event.received_at.as_nanosecond().to_le_bytes());
    digest.update(event.sequence.to_le_bytes());
    digest.update(event.sender.to_string().as_bytes());
    digest.update(event.tag().as_bytes());
    for &field in Field::ALL {
        let value = event.get(field).or_else(|| event.raw(field));
        if let Some(value) = value {
            digest.update([field as u8]);
            digest.update((value.len() as u64).to_le_bytes());
            digest.update(value.as_bytes());
        }
    }
    let hash = digest.finalize();
    let mut id = String::with_capacity(32);
    for byte in &hash[..16] {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::sample_event;

    fn subject(template: &str, kind: &str) -> String {
        let t = SubjectTemplate::new(template).unwrap();
        t.render(sample_event(kind).to_json().as_bytes()).unwrap()
    }

    #[test]
    fn the_default_subject_is_type_source_and_host() {
        let default = super::super::config::DEFAULT_SUBJECT;
        assert_eq!(subject(default, "engine"), "qliksense.log.engine.pro2-win1");
        assert_eq!(
            SubjectTemplate::new(default).unwrap().fixed_prefix(),
            Some("qliksense.")
        );
    }

    #[test]
    fn values_become_one_safe_token_each() {
        assert_eq!(token("a.b c*d>e\tf\u{7}"), "a_b_c_d_e_f_");
        assert_eq!(token(""), "_");
        assert_eq!(token("$JS"), "_JS");
        assert_eq!(token("a$b"), "a$b");
        assert_eq!(token("Ünïcode"), "Ünïcode");
        let long = "é".repeat(100);
        let cut = token(&long);
        assert!(cut.len() <= TOKEN_MAX && cut.chars().all(|c| c == 'é'));
        // A field the event lacks is a token too, not an empty one.
        assert_eq!(
            subject("sense.{{ task_name }}.{{ subsystem }}", "engine"),
            "sense._.System_Engine_Engine"
        );
    }

    #[test]
    fn bad_templates_are_refused_when_compiled() {
        for (template, part) in [
            ("sense.{{ type", "does not compile"),
            ("sense..{{ type }}", "empty token"),
            ("sense.*.{{ type }}", "'*'"),
            ("sense.{{ type }}.>", "'>'"),
            ("sense {{ type }}", "' '"),
            ("", "empty subject"),
            ("$JS.API.{{ type }}", "'$'"),
        ] {
            let err = SubjectTemplate::new(template).unwrap_err();
            assert!(err.contains(part), "{template}: {err}");
        }
    }

    #[test]
    fn the_fixed_prefix_is_whole_tokens_before_the_first_field() {
        for (template, prefix) in [
            ("qliksense.{{ type }}", Some("qliksense.")),
            ("a.b.{{ type }}.c", Some("a.b.")),
            ("a.b-{{ type }}", Some("a.")),
            ("{{ type }}.a", None),
            ("sense-{{ type }}", None),
            ("a.{% if type %}x{% endif %}", Some("a.")),
        ] {
            assert_eq!(fixed_prefix(template).as_deref(), prefix, "{template}");
        }
    }

    #[test]
    fn stream_names_have_no_subject_characters() {
        assert!(is_valid_stream_name("QLIK"));
        assert!(is_valid_stream_name("qlik-events_1"));
        for bad in ["", "A.B", "A B", "A*", "A>", "A/B", "A\\B"] {
            assert!(!is_valid_stream_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_message_id_is_the_same_for_the_same_event_and_differs_between_events() {
        let event = sample_event("engine");
        let id = message_id(&event);
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(message_id(&event.clone()), id);
        // Read back from the disk buffer: the same id.
        let mut bytes = Vec::new();
        event.encode_binary(&mut bytes);
        let decoded = Event::decode_binary(&bytes).unwrap();
        assert_eq!(message_id(&decoded), id);
        let mut next = event.clone();
        next.sequence += 1;
        assert_ne!(message_id(&next), id);
        assert_ne!(message_id(&sample_event("proxy")), id);
    }
}
