#!/usr/bin/env python3
"""A throwaway SMTP server for herald's tests, built on aiosmtpd.

Started by tests/support/smtp.rs on a loopback port. Every accepted message is
parsed with Python's own email package (independent of lettre, which built it)
and appended as one JSON line to --out: envelope, decoded headers, the text and
HTML parts, their transfer encodings, whether the session used TLS and who
logged in. Prints "ready" on stdout once it accepts connections.

Scripted refusals, by substring of the recipient address:
  --refuse S        RCPT answers 550 (unknown mailbox) for matching recipients
  --flaky S:N       RCPT answers 451 (try later) the first N times per recipient
"""

import argparse
import json
import ssl
import sys
import threading
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out, refuse, flaky, flaky_times):
        self.out = out
        self.refuse = refuse
        self.flaky = flaky
        self.flaky_times = flaky_times
        self.flaky_seen = {}
        self.lock = threading.Lock()

    def log(self, record):
        with self.lock:
            with open(self.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse and self.refuse in address:
            self.log({"event": "refused", "rcpt": address, "code": 550})
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if self.flaky and self.flaky in address:
            seen = self.flaky_seen.get(address, 0)
            self.flaky_seen[address] = seen + 1
            if seen < self.flaky_times:
                self.log({"event": "refused", "rcpt": address, "code": 451})
                return "451 4.3.0 <%s>: Temporary failure, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = BytesParser(policy=policy.default).parsebytes(raw)

        def part(kind):
            body = msg.get_body(preferencelist=(kind,))
            if body is None or body.get_content_type() != "text/" + kind:
                return None, None
            return body.get_content(), str(body.get("Content-Transfer-Encoding", ""))

        text, text_cte = part("plain")
        html, html_cte = part("html")
        auth = getattr(session, "auth_data", None)
        if isinstance(auth, LoginPassword):
            auth = auth.login
        if isinstance(auth, bytes):
            auth = auth.decode("utf-8", "replace")
        self.log(
            {
                "event": "message",
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "from": addresses(msg, "From"),
                "to": addresses(msg, "To"),
                "subject": str(msg.get("Subject", "")),
                "content_type": msg.get_content_type(),
                "headers": {k: str(v) for k, v in msg.items()},
                "text": text,
                "text_cte": text_cte,
                "html": html,
                "html_cte": html_cte,
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "auth": auth,
                "max_line": max((len(l) for l in raw.split(b"\r\n")), default=0),
                "ascii": all(b < 128 for b in raw),
            }
        )
        return "250 Message accepted for delivery"


def addresses(msg, name):
    """[display name, address] pairs of an address header, decoded."""
    header = msg.get(name)
    if header is None:
        return []
    return [[a.display_name, a.addr_spec] for a in header.addresses]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--auth", help="user:password; AUTH is then required")
    parser.add_argument("--refuse")
    parser.add_argument("--flaky")
    args = parser.parse_args()

    flaky, flaky_times = None, 0
    if args.flaky:
        flaky, times = args.flaky.rsplit(":", 1)
        flaky_times = int(times)
    handler = Handler(args.out, args.refuse, flaky, flaky_times)

    kwargs = {"decode_data": False, "enable_SMTPUTF8": False}
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    if context is not None and not args.implicit_tls:
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = True
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            if (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            ):
                return AuthResult(success=True, auth_data=user)
            return AuthResult(success=False, handled=False)

        kwargs["authenticator"] = authenticator
        kwargs["auth_required"] = True
        kwargs["auth_require_tls"] = context is not None

    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=args.port,
        ssl_context=context if args.implicit_tls else None,
        server_hostname="smtp.test",
        **kwargs,
    )
    controller.start()
    print("ready", flush=True)
    try:
        # Until the test kills us, or its end of stdin closes.
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
