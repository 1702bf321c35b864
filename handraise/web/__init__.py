"""The web channel: host sign-in and dashboard (and, later, the companion page and the API).

``init_web(app)`` installs what every page shares: the host session (quart-auth), the
security headers, and the blueprints. Blueprint modules do not import one another; what
they share lives in :mod:`.security` (sessions, CSRF, rate limits) and :mod:`.live` (SSE).
"""

from __future__ import annotations

from quart import Quart

from .security import init_security


def clock(ms: int | float) -> str:
    """Milliseconds as a clock: ``0:07``, ``12:30``, ``1:02:03`` (app.js ticks the same format)."""
    s = max(0, int(ms // 1000))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def init_web(app: Quart) -> None:
    from .api import bp as api_bp
    from .auth import bp as auth_bp
    from .host import bp as host_bp
    from .metrics import bp as metrics_bp
    from .participant import bp as participant_bp

    init_security(app)
    app.add_template_filter(clock)
    app.register_blueprint(auth_bp)
    app.register_blueprint(host_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(participant_bp)
    app.register_blueprint(metrics_bp)
