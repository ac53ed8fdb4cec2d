"""The command palette's fleet commands: go to a node, refresh, filter by status or site, sort, help."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from ..widgets.fleet_table import COLUMNS, STATUSES


class FleetCommands(Provider):
    """Commands are rebuilt on every search from the app's fleet, so new snapshots show up at once."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        out: list[tuple[str, object, str]] = []
        for name in app.nodes:
            snap = app.snapshot(name)
            out.append((f"Go to node {name}", partial(app.open_node, name), f"{snap.status}; {snap.site or 'no site'}"))
        out.append(("Refresh all nodes", app.action_refresh_all, "poll every node now"))
        for status in STATUSES:
            out.append((f"Filter: status {status}", partial(app.filter_fleet, status), "show only these nodes"))
        for site in sorted({n.entry.site for n in app.nodes.values() if n.entry.site}):
            out.append((f"Filter: site {site}", partial(app.filter_fleet, site), "show only this site"))
        out.append(("Clear the filter", partial(app.filter_fleet, ""), "show every node"))
        for col in COLUMNS:
            out.append((f"Sort by {col.label}", partial(self._sort, col.key), "on the fleet screen"))
        if not app.locked_readonly:
            out.append(
                (
                    "Toggle read-only (hide actions that change a node)",
                    app.action_toggle_readonly,
                    "currently " + ("read-only" if app.readonly else "actions shown"),
                )
            )
        out.append(("Help: keys", app.action_help, "every key binding"))
        return out

    def _sort(self, column: str) -> None:
        from .fleet import FleetScreen

        self.app.filter_fleet(self.app.screen.query_text if isinstance(self.app.screen, FleetScreen) else "")
        screen = self.app.screen
        if isinstance(screen, FleetScreen):
            screen.sort_column, screen.sort_reverse = column, False
            screen.redraw()

    async def discover(self) -> Hits:
        for text, command, help_text in self._commands():
            yield DiscoveryHit(text, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, command, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), command, help=help_text)
