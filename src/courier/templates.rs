//! Message templates per message type, channel and locale, in Jinja syntax (minijinja).
//!
//! Lookup for a message of type `T` in locale `L` (for example `de-CH`): a configured override
//! (`courier.templates.T.valid.{email,sms}…`, any locale) → `L` → its language (`de`) → `en`. Each
//! level comes from, in order of precedence, files under `courier.template_override_path`
//! (`<path>/T/<L>/email.subject.jinja`, `email.body.jinja`, `email.body.html.jinja`,
//! `sms.body.jinja`; files directly under `<path>/T/` are the default locale) and the built-in
//! texts below (English and German).
//!
//! What a template sees: `code` (also `login_code`, as in Kratos), `to`, `identity_id`,
//! `expires_in_minutes`, `request_url_domain`, `locale`, `purpose`. SMS texts always end with the
//! WebOTP line `@<request_url_domain> #<code>`; it is appended when a template leaves it out.
//! Every template is compiled and test-rendered when the configuration is loaded, so a broken
//! template is a configuration error at start-up, never a failure at send time.
use crate::config::{Config, ConfigProblem};
use crate::domain::aal::Channel;
use base64::Engine;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;
use std::path::Path;

pub const DEFAULT_LOCALE: &str = "en";
const TYPES: [&str; 2] = ["login_code", "verification_code"];
const PARTS: [&str; 4] = ["email.subject", "email.body", "email.body.html", "sms.body"];
/// The locale key under which configured overrides live: they apply to every locale.
const ANY_LOCALE: &str = "*";

/// (type, locale, part, template)
const BUILT_IN: &[(&str, &str, &str, &str)] = &[
    ("login_code", "en", "email.subject", "Your login code"),
    (
        "login_code",
        "en",
        "email.body",
        "Hi,\n\nplease enter the following code to log in:\n\n{{ code }}\n\nIt expires in {{ expires_in_minutes }} minutes. If you did not ask for it, you can ignore this message.",
    ),
    (
        "login_code",
        "en",
        "email.body.html",
        "<p>Hi,</p><p>please enter the following code to log in:</p><p><strong>{{ code }}</strong></p><p>It expires in {{ expires_in_minutes }} minutes. If you did not ask for it, you can ignore this message.</p>",
    ),
    (
        "login_code",
        "en",
        "sms.body",
        "Your login code is: {{ code }}\n\nIt expires in {{ expires_in_minutes }} minutes.",
    ),
    (
        "verification_code",
        "en",
        "email.subject",
        "Your verification code",
    ),
    (
        "verification_code",
        "en",
        "email.body",
        "Hi,\n\nplease enter the following verification code:\n\n{{ code }}\n\nIt expires in {{ expires_in_minutes }} minutes. If you did not ask for it, you can ignore this message.",
    ),
    (
        "verification_code",
        "en",
        "email.body.html",
        "<p>Hi,</p><p>please enter the following verification code:</p><p><strong>{{ code }}</strong></p><p>It expires in {{ expires_in_minutes }} minutes.</p>",
    ),
    (
        "verification_code",
        "en",
        "sms.body",
        "Your verification code is: {{ code }}\n\nIt expires in {{ expires_in_minutes }} minutes.",
    ),
    ("login_code", "de", "email.subject", "Ihr Anmeldecode"),
    (
        "login_code",
        "de",
        "email.body",
        "Hallo,\n\nbitte geben Sie diesen Code ein, um sich anzumelden:\n\n{{ code }}\n\nEr ist {{ expires_in_minutes }} Minuten gültig. Wenn Sie ihn nicht angefordert haben, können Sie diese Nachricht ignorieren.",
    ),
    (
        "login_code",
        "de",
        "sms.body",
        "Ihr Anmeldecode lautet: {{ code }}\n\nEr ist {{ expires_in_minutes }} Minuten gültig.",
    ),
    (
        "verification_code",
        "de",
        "email.subject",
        "Ihr Bestätigungscode",
    ),
    (
        "verification_code",
        "de",
        "email.body",
        "Hallo,\n\nbitte geben Sie diesen Bestätigungscode ein:\n\n{{ code }}\n\nEr ist {{ expires_in_minutes }} Minuten gültig.",
    ),
    (
        "verification_code",
        "de",
        "sms.body",
        "Ihr Bestätigungscode lautet: {{ code }}\n\nEr ist {{ expires_in_minutes }} Minuten gültig.",
    ),
];

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

pub struct Templates {
    environment: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Templates").finish_non_exhaustive()
    }
}

fn name(template_type: &str, locale: &str, part: &str) -> String {
    format!("{template_type}/{locale}/{part}")
}

/// A sample context for test-rendering at load time.
fn sample_context() -> Value {
    serde_json::json!({
        "code": "123456", "login_code": "123456", "to": "+4915112345678",
        "identity_id": "00000000-0000-0000-0000-000000000000", "expires_in_minutes": 15,
        "request_url_domain": "example.com", "locale": "en", "purpose": "login",
    })
}

/// A configured template value: inline text, `base64://…` or `file://…`.
fn read_source(value: &str) -> Result<String, String> {
    if let Some(encoded) = value.strip_prefix("base64://") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "is not valid base64".to_owned())?;
        return String::from_utf8(bytes).map_err(|_| "is not utf-8 text".to_owned());
    }
    if let Some(path) = value.strip_prefix("file://") {
        return std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {path}: {error}"));
    }
    Ok(value.to_owned())
}

/// Kratos's layout: `courier.templates.<type>.valid.email.{subject, body.{plaintext, html}}` and
/// `courier.templates.<type>.valid.sms.body`.
fn configured_overrides(templates: &Value) -> Vec<(String, String, String, String)> {
    let mut found = Vec::new();
    for template_type in TYPES {
        let Some(valid) = templates.get(template_type).and_then(|t| t.get("valid")) else {
            continue;
        };
        let key = |rest: &str| format!("courier.templates.{template_type}.valid.{rest}");
        let mut take = |value: Option<&Value>, part: &str, rest: &str| {
            if let Some(text) = value.and_then(Value::as_str) {
                found.push((
                    template_type.to_owned(),
                    part.to_owned(),
                    key(rest),
                    text.to_owned(),
                ));
            }
        };
        take(
            valid.pointer("/email/subject"),
            "email.subject",
            "email.subject",
        );
        take(
            valid.pointer("/email/body/plaintext"),
            "email.body",
            "email.body.plaintext",
        );
        take(
            valid.pointer("/email/body/html"),
            "email.body.html",
            "email.body.html",
        );
        take(valid.pointer("/sms/body"), "sms.body", "sms.body");
    }
    found
}

impl Templates {
    /// Compiles the built-in, file and configured templates and test-renders each one.
    pub fn compile(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut problems = Vec::new();
        for (template_type, locale, part, source) in BUILT_IN {
            let name = name(template_type, locale, part);
            add_checked(
                &mut environment,
                &mut problems,
                name,
                (*source).to_owned(),
                "courier.templates".into(),
            );
        }
        if let Some(root) = &config.courier.template_override_path {
            add_files(&mut environment, &mut problems, Path::new(root));
        }
        if let Some(templates) = &config.courier.templates {
            for (template_type, part, key, value) in configured_overrides(templates) {
                match read_source(&value) {
                    Ok(source) => {
                        let name = name(&template_type, ANY_LOCALE, &part);
                        add_checked(&mut environment, &mut problems, name, source, key);
                    }
                    Err(message) => problems.push(ConfigProblem { key, message }),
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { environment })
        } else {
            Err(problems)
        }
    }

    /// The built-in templates only (used if a stored configuration's templates vanished).
    pub fn built_in() -> Self {
        Self::compile(&Config::default()).unwrap_or_else(|_| Self {
            environment: Environment::new(),
        })
    }

    fn find(
        &self,
        template_type: &str,
        locale: &str,
        part: &str,
    ) -> Option<minijinja::Template<'_, '_>> {
        let language = locale.split(['-', '_']).next().unwrap_or(locale);
        [ANY_LOCALE, locale, language, DEFAULT_LOCALE]
            .into_iter()
            .find_map(|candidate| {
                self.environment
                    .get_template(&name(template_type, candidate, part))
                    .ok()
            })
    }

    fn render_part(
        &self,
        template_type: &str,
        locale: &str,
        part: &str,
        context: &Value,
    ) -> Result<Option<String>, String> {
        match self.find(template_type, locale, part) {
            Some(template) => template
                .render(minijinja::value::Serde(context))
                .map(Some)
                .map_err(|error| error.to_string()),
            None => Ok(None),
        }
    }

    pub fn render(
        &self,
        template_type: &str,
        channel: Channel,
        locale: &str,
        context: &Value,
    ) -> Result<Rendered, String> {
        match channel {
            Channel::Sms => {
                let mut text = self
                    .render_part(template_type, locale, "sms.body", context)?
                    .ok_or_else(|| format!("no sms template for {template_type}"))?;
                let code = context
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let domain = context
                    .get("request_url_domain")
                    .and_then(Value::as_str)
                    .unwrap_or("localhost");
                let webotp = format!("@{domain} #{code}");
                if !text.trim_end().ends_with(&webotp) {
                    text = format!("{}\n\n{webotp}", text.trim_end());
                }
                Ok(Rendered {
                    subject: None,
                    text,
                    html: None,
                })
            }
            Channel::Email => Ok(Rendered {
                subject: self.render_part(template_type, locale, "email.subject", context)?,
                text: self
                    .render_part(template_type, locale, "email.body", context)?
                    .ok_or_else(|| format!("no email template for {template_type}"))?,
                html: self.render_part(template_type, locale, "email.body.html", context)?,
            }),
        }
    }
}

/// Adds a template and test-renders it; a failure becomes a problem naming `key`.
fn add_checked(
    environment: &mut Environment<'static>,
    problems: &mut Vec<ConfigProblem>,
    name: String,
    source: String,
    key: String,
) {
    let check = environment
        .add_template_owned(name.clone(), source)
        .and_then(|()| {
            environment
                .get_template(&name)?
                .render(minijinja::value::Serde(sample_context()))
        });
    if let Err(error) = check {
        problems.push(ConfigProblem {
            key,
            message: format!("template does not render: {error}"),
        });
    }
}

/// `<root>/<type>/[<locale>/]<part>.jinja`.
fn add_files(
    environment: &mut Environment<'static>,
    problems: &mut Vec<ConfigProblem>,
    root: &Path,
) {
    for template_type in TYPES {
        let type_dir = root.join(template_type);
        let mut locales = vec![(DEFAULT_LOCALE.to_owned(), type_dir.clone())];
        if let Ok(entries) = std::fs::read_dir(&type_dir) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    locales.push((
                        entry.file_name().to_string_lossy().into_owned(),
                        entry.path(),
                    ));
                }
            }
        }
        for (locale, dir) in locales {
            for part in PARTS {
                let path = dir.join(format!("{part}.jinja"));
                if let Ok(source) = std::fs::read_to_string(&path) {
                    let key = format!("courier.template_override_path ({})", path.display());
                    add_checked(
                        environment,
                        problems,
                        name(template_type, &locale, part),
                        source,
                        key,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(locale: &str) -> Value {
        let mut context = sample_context();
        context["locale"] = Value::String(locale.into());
        context
    }

    #[test]
    fn sms_ends_with_the_webotp_line_and_locales_fall_back() {
        let templates = Templates::compile(&Config::default()).unwrap();
        let sms = templates
            .render("login_code", Channel::Sms, "en", &context("en"))
            .unwrap();
        assert!(sms.text.starts_with("Your login code is: 123456"));
        assert!(sms.text.ends_with("@example.com #123456"));
        let german = templates
            .render("login_code", Channel::Sms, "de-CH", &context("de-CH"))
            .unwrap();
        assert!(
            german.text.starts_with("Ihr Anmeldecode lautet: 123456"),
            "{}",
            german.text
        );
        let fallback = templates
            .render("login_code", Channel::Email, "fr", &context("fr"))
            .unwrap();
        assert_eq!(fallback.subject.as_deref(), Some("Your login code"));
        assert!(fallback.html.unwrap().contains("<strong>123456</strong>"));
    }

    #[test]
    fn configured_and_file_overrides_win_and_bad_templates_are_config_errors() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(directory.path().join("login_code/fr")).unwrap();
        std::fs::write(
            directory.path().join("login_code/fr/sms.body.jinja"),
            "Votre code : {{ code }}",
        )
        .unwrap();
        let mut config = Config::default();
        config.courier.template_override_path = Some(directory.path().display().to_string());
        config.courier.templates = Some(serde_json::json!({
            "verification_code": {"valid": {"email": {"subject": "base64://Q29kZSB7eyBjb2RlIH19"}}}
        }));
        let templates = Templates::compile(&config).unwrap();
        let french = templates
            .render("login_code", Channel::Sms, "fr", &context("fr"))
            .unwrap();
        assert_eq!(french.text, "Votre code : 123456\n\n@example.com #123456");
        let subject = templates
            .render("verification_code", Channel::Email, "de", &context("de"))
            .unwrap()
            .subject;
        assert_eq!(subject.as_deref(), Some("Code 123456"));

        config.courier.templates = Some(serde_json::json!({
            "login_code": {"valid": {"sms": {"body": "{{ unknown_variable }}"}}}
        }));
        let problems = Templates::compile(&config).unwrap_err();
        assert_eq!(
            problems[0].key,
            "courier.templates.login_code.valid.sms.body"
        );
        config.courier.templates = Some(serde_json::json!({
            "login_code": {"valid": {"sms": {"body": "{% if %}"}}}
        }));
        assert!(Templates::compile(&config).is_err());
    }
}
