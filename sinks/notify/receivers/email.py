"""Email receiver: SMTP with STARTTLS or implicit TLS and optional AUTH; multipart/alternative text + HTML.

Recipients are the receiver's ``to`` or else ALERT_EMAIL_RECIPIENTS. SMTP
replies classify like HTTP: 4xx and a dropped connection are retried, 5xx
(a refused sender, recipient or message; bad credentials) fail for good.
``send_email`` is shared with the daily summary.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tocsin.core.validation import safe_text
from tocsin.sinks.notify.config import EmailReceiverConfig, SmtpConfig
from tocsin.sinks.notify.receivers.base import DeliveryResult, Notification, Notifier

SUBJECT_MAX_CHARS = 200


def build_message(subject: str, text: str, html: str | None, from_addr: str, to: list[str],
                  message_id: str | None = None) -> EmailMessage:
    """A multipart/alternative message (text first, so clients prefer the HTML they can show)."""
    msg = EmailMessage()
    # One line (no header injection), control characters shown escaped (no ANSI in a mail client or terminal).
    msg["Subject"] = safe_text(" ".join(subject.split()), one_line=True)[:SUBJECT_MAX_CHARS]
    msg["From"] = from_addr
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id or make_msgid(domain="tocsin")
    msg.set_content(safe_text(text or subject))
    if html:
        msg.add_alternative(safe_text(html), subtype="html")
    return msg


def _tls_context(cfg: SmtpConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)


def _classify_smtp(code: int, text: str) -> DeliveryResult:
    detail = f"SMTP {code}: {text}"
    return DeliveryResult.retry(detail) if 400 <= code < 500 else DeliveryResult.failed(detail)


AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")  # PLAIN first: universal, and the channel is TLS


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with the first mechanism both sides know; unlike ``SMTP.login`` it stops at the first
    rejection, since other mechanisms with the same credentials only risk a lockout."""
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    advertised = smtp.esmtp_features["auth"].upper().split()
    for mech in AUTH_MECHANISMS:
        if mech in advertised:
            smtp.user, smtp.password = user, password
            smtp.auth(mech, getattr(smtp, "auth_" + mech.lower().replace("-", "_")))
            return
    raise smtplib.SMTPNotSupportedError(f"no common AUTH mechanism (server offers {' '.join(advertised)})")


def send_email(cfg: SmtpConfig, msg: EmailMessage, to: list[str]) -> DeliveryResult:
    """One delivery attempt of ``msg`` to ``to`` through ``cfg``'s server, classified."""
    if not to:
        return DeliveryResult.failed("no recipients: set the receiver's `to` or ALERT_EMAIL_RECIPIENTS")
    try:
        if cfg.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.smtp_host, cfg.port, timeout=cfg.timeout_s,
                                                  context=_tls_context(cfg))
        else:
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.port, timeout=cfg.timeout_s)
        with smtp:
            if cfg.security == "starttls":
                smtp.starttls(context=_tls_context(cfg))
            if cfg.username:
                _login(smtp, cfg.username, cfg.password.get_secret_value() if cfg.password else "")
            refused = smtp.send_message(msg, from_addr=cfg.from_addr, to_addrs=to)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        text = "; ".join(f"{rcpt}: {code} {m.decode(errors='replace') if isinstance(m, bytes) else m}"
                         for rcpt, (code, m) in exc.recipients.items())
        return _classify_smtp(min(codes) if all(400 <= c < 500 for c in codes) else max(codes), text)
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, auth failed...
        message = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return _classify_smtp(exc.smtp_code, message)
    except ssl.SSLCertVerificationError as exc:
        return DeliveryResult.failed(f"TLS certificate rejected: {exc.verify_message}; set ca_file?")
    except smtplib.SMTPNotSupportedError as exc:
        return DeliveryResult.failed(f"server does not support it: {exc}; check `security`")
    except (smtplib.SMTPException, OSError) as exc:  # OSError covers refused connections and timeouts
        where = f"{cfg.smtp_host}:{cfg.port}"
        return DeliveryResult.retry(f"SMTP connection to {where} failed: {type(exc).__name__}: {exc}")
    if refused:
        # Accepted for some recipients: the mail went out; retrying would duplicate it for the others.
        return DeliveryResult("sent", 250, f"refused recipients: {', '.join(sorted(refused))}")
    return DeliveryResult.sent(250)


class EmailNotifier(Notifier[EmailReceiverConfig]):
    """One mail per notification: subject, text and HTML from the receiver's templates."""

    type = "email"
    parts = ("subject", "text", "html")

    def __init__(self, config: EmailReceiverConfig, default_recipients: list[str] | None = None) -> None:
        super().__init__(config)
        self.recipients = list(config.to or default_recipients or [])

    def send(self, notification: Notification) -> DeliveryResult:
        subject = notification.text("subject", f"[{notification.status.upper()}] {notification.receiver}")
        msg = build_message(subject, notification.text("text", subject), notification.rendered.get("html"),
                            self.config.from_addr, self.recipients,
                            message_id=f"<{notification.id}@tocsin>")
        return send_email(self.config, msg, self.recipients)
