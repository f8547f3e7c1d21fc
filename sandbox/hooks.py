"""The fifth server (plain http): where alert webhooks are delivered."""

from __future__ import annotations

from .http import Handler, Reply, route_table


class Hooks(Handler):
    """Webhook receiver for alerts: POST /hooks/<name> records JSON bodies (Sandbox.hooks)."""

    family = "hooks"
    routes = route_table(("POST", "/hooks/{name}", r"/hooks/(?P<name>[\w-]+)", "receive", "open"))

    def fault(self, kind: str) -> Reply:
        return Reply(503 if kind == "429" else 500, "internal error (sandbox fault)")

    def not_found(self, method: str, path: str) -> Reply:
        return Reply(404, "no_service")

    def receive(self, name: str) -> Reply:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "x-healthsync-delivery")}
        return Reply(*self.sb.hook_inbox.receive(name, self.body, headers))
