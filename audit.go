package passwordless

import (
	"context"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Audit events answer who signed in, when and from where, and what
// changed on an account. They are Caddy log entries at info level on their
// own logger, http.handlers.passwordless.audit, so a `log` block can send
// them to a file of their own. An entry carries ids, the channel and the
// client IP only: never a code, a token, a refresh token, a secret, a
// message body or an address.

// The messages of audit entries, one per kind of event.
const (
	auditLogin           = "login"
	auditLoginFailed     = "login failed"
	auditLocked          = "locked"
	auditLogout          = "logout"
	auditRefreshReuse    = "refresh reuse"
	auditUserCreated     = "user created"
	auditAliasLinked     = "alias linked"
	auditUserDisabled    = "user disabled"
	auditUserEnabled     = "user enabled"
	auditUserDeleted     = "user deleted"
	auditSessionsRevoked = "sessions revoked"
	auditRolesChanged    = "roles changed"
)

// auditEvent is what an audit entry tells beyond its message; empty
// fields are left out of the entry.
type auditEvent struct {
	UserID    string
	Channel   AliasKind
	ClientIP  string
	SessionID string
	PasskeyID string
}

// auditor writes audit entries to a logger named
// http.handlers.passwordless.audit: the handler's is its module logger's
// child "audit"; the command line wraps the one it opens.
type auditor struct{ logger *zap.Logger }

// record writes one entry. extra fields are for what an event tells
// beyond the usual four, such as the roles given; never a secret.
func (a auditor) record(msg string, ev auditEvent, extra ...zap.Field) {
	if a.logger == nil {
		return
	}
	fields := make([]zap.Field, 0, 5+len(extra))
	for _, f := range []struct{ key, value string }{
		{"user_id", ev.UserID}, {"channel", string(ev.Channel)},
		{"client_ip", ev.ClientIP}, {"session_id", ev.SessionID}, {"passkey_id", ev.PasskeyID},
	} {
		if f.value != "" {
			fields = append(fields, zap.String(f.key, f.value))
		}
	}
	a.logger.Info(msg, append(fields, extra...)...)
}

// audit records an event of a request, with Caddy's client IP of it. ctx
// is the request's context, or one derived from it.
func (p *Passwordless) audit(ctx context.Context, msg string, ev auditEvent) {
	ev.ClientIP = clientIPOf(ctx)
	p.auditor.record(msg, ev)
}

// clientIPOf is clientIP for code that holds only the request's context:
// Caddy's server sets client_ip on every request it serves.
func clientIPOf(ctx context.Context) string {
	ip, _ := caddyhttp.GetVar(ctx, caddyhttp.ClientIPVarKey).(string)
	return ip
}

// exchangeFailed records a wrong code presented for a, counted and
// audited with the account a belongs to, if any; locked tells whether
// this failure locked a.
func (p *Passwordless) exchangeFailed(ctx context.Context, a Alias, locked bool) {
	result, msg := loginInvalid, auditLoginFailed
	if locked {
		result, msg = loginLocked, auditLocked
	}
	countExchange(a.Kind, result)
	ev := auditEvent{Channel: a.Kind}
	if u, err := p.store.UserByAlias(ctx, p.Realm, a); err == nil {
		ev.UserID = u.ID
	}
	p.audit(ctx, msg, ev)
}

// loggedIn records a successful login of u by a, in session sid.
func (p *Passwordless) loggedIn(ctx context.Context, a Alias, u User, sid string) {
	countExchange(a.Kind, loginSuccess)
	p.audit(ctx, auditLogin, auditEvent{UserID: u.ID, Channel: a.Kind, SessionID: sid})
}
