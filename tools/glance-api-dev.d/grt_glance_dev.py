"""For tools/glance-api-dev's throwaway glance-api (copied into GLANCE_DEV_DIR).

loopback_auth: a LOOPBACK-ONLY stand-in for keystonemiddleware's authtoken with NO
AUTHENTICATION. Refuses peers that are not on loopback; for the others, sets the
identity headers authtoken would set, unless the client sent them:
by default an admin of one fixed project. A client may claim any role with X-Roles or
X-Service-Roles (glance's `context` filter trusts them); that is the point here, and
the reason this must never listen anywhere but 127.0.0.1.

Importing it (paste does, when glance loads its pipeline) also makes sqlite
transactions BEGIN IMMEDIATE, see _sqlite_begin_immediate.
"""

LOOPBACK = ("127.", "::1", "::ffff:127.")


def _sqlite_begin_immediate():
    """glance + sqlite under concurrent requests: oslo.db turns pysqlite's own
    BEGIN off and emits a plain (deferred) BEGIN; two transactions that read and
    then write deadlock on the lock upgrade and sqlite fails one at once with
    "database is locked" (a 500), without waiting. BEGIN IMMEDIATE takes the
    write lock up front, so transactions queue (busy timeout: ?timeout= in
    [database] connection) instead. Only for this sqlite dev setup. Relies on
    oslo.db's "in_transaction" marker (oslo_db/sqlalchemy/engines.py); a
    class-level listener runs before oslo.db's per-engine one.
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "begin")
    def _begin_immediate(conn):
        if conn.dialect.name == "sqlite" and "in_transaction" not in conn.info:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["in_transaction"] = True


_sqlite_begin_immediate()


def filter_factory(global_conf, **local_conf):
    defaults = {
        "HTTP_X_IDENTITY_STATUS": "Confirmed",
        "HTTP_X_ROLES": local_conf.get("roles", "admin,member,reader"),
        "HTTP_X_PROJECT_ID": local_conf["project_id"],
        "HTTP_X_TENANT_ID": local_conf["project_id"],
        "HTTP_X_USER_ID": local_conf["user_id"],
    }

    def make(app):
        def loopback_auth(environ, start_response):
            if not environ.get("REMOTE_ADDR", "").startswith(LOOPBACK):
                start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [b"glance-api-dev: loopback clients only\n"]
            for key, value in defaults.items():
                environ.setdefault(key, value)
            return app(environ, start_response)
        return loopback_auth
    return make
