//! Turns a queued message into what a gateway sends: opens nothing itself (the worker does), fills
//! the template context, renders with the configured templates.
use super::OutgoingMessage;
use super::templates::Templates;
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

/// Renders a queued message with the configured templates.
pub fn render(
    templates: &Templates,
    message: &OutboxMessage,
    data: &CodeTemplateData,
    domain: &str,
) -> Result<OutgoingMessage, String> {
    let template_data = serde_json::json!({
        "to": message.recipient,
        "code": data.code,
        "login_code": data.code,
        "identity_id": data.identity_id,
        "expires_in_minutes": data.expires_in_minutes,
        "request_url_domain": domain,
        "locale": message.locale,
        "purpose": data.purpose,
    });
    let rendered = templates.render(
        &message.template_type,
        message.channel,
        &message.locale,
        &template_data,
    )?;
    Ok(OutgoingMessage {
        id: message.id,
        channel: message.channel,
        recipient: message.recipient.clone(),
        template_type: message.template_type.clone(),
        subject: rendered.subject,
        body: rendered.text,
        html_body: rendered.html,
        locale: message.locale.clone(),
        template_data,
    })
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
