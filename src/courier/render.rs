//! Built-in message texts. SMS bodies end with the WebOTP line `@<domain> #<code>` so browsers
//! and phones can offer the code for autofill; texts follow Kratos's so users see familiar words.
use super::OutgoingMessage;
use crate::domain::aal::Channel;
use crate::domain::challenges::CodeTemplateData;
use crate::store::codes::OutboxMessage;

/// The WebOTP domain: the host of `serve.public.base_url`, or `localhost`.
pub fn webotp_domain(base_url: Option<&str>) -> String {
    base_url
        .and_then(|url| url.split_once("://").map(|(_, rest)| rest))
        .map(|rest| rest.split(['/', ':']).next().unwrap_or_default().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

pub fn render(message: &OutboxMessage, data: &CodeTemplateData, domain: &str) -> OutgoingMessage {
    let (what, subject) = match message.template_type.as_str() {
        "login_code" => ("login code", "Your login code"),
        _ => ("verification code", "Your verification code"),
    };
    let minutes = data.expires_in_minutes;
    let (subject, body) = match message.channel {
        Channel::Sms => (
            None,
            format!(
                "Your {what} is: {code}\n\nIt expires in {minutes} minutes.\n\n@{domain} #{code}",
                code = data.code
            ),
        ),
        Channel::Email => (
            Some(subject.to_owned()),
            format!(
                "Hi,\n\nplease enter the following code:\n\n{code}\n\nIt expires in {minutes} minutes. \
                 If you did not ask for it, you can ignore this message.",
                code = data.code
            ),
        ),
    };
    OutgoingMessage {
        id: message.id,
        channel: message.channel,
        recipient: message.recipient.clone(),
        template_type: message.template_type.clone(),
        subject,
        body,
        html_body: None,
        locale: message.locale.clone(),
        template_data: serde_json::json!({
            "to": message.recipient,
            "code": data.code,
            "login_code": data.code,
            "identity_id": data.identity_id,
            "expires_in_minutes": data.expires_in_minutes,
            "request_url_domain": domain,
            "locale": message.locale,
            "purpose": data.purpose,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::webotp_domain;

    #[test]
    fn webotp_domain_is_the_public_host() {
        assert_eq!(
            webotp_domain(Some("https://auth.example.com:8443/path")),
            "auth.example.com"
        );
        assert_eq!(webotp_domain(None), "localhost");
    }
}
