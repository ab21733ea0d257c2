// Package passwordless is a Caddy module that logs users in with one-time
// codes sent by email or SMS, issues JWTs, and checks them before Caddy
// proxies protected requests. It keeps the HTTP API of drfpasswordless.
package passwordless

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Passwordless{})
}

// now is the one clock of the plugin; tests move it.
var now = time.Now

// Passwordless logs users in with a one-time code sent by email or SMS,
// issues signed JWTs, and checks them on protected routes before the next
// handler (usually reverse_proxy) runs. The upstream learns who the user is
// from the X-Auth-User-Id, X-Auth-User-Email and X-Auth-User-Mobile request
// headers; the {http.auth.user.id}, {http.auth.user.email} and
// {http.auth.user.mobile} placeholders carry the same.
//
// Its endpoints and response shapes are those of drfpasswordless, so
// existing clients keep working.
type Passwordless struct {
	// Path prefix under which the endpoints live. Default: `/auth`.
	Prefix string `json:"prefix,omitempty"`

	// Where users, codes, sessions and keys are kept. Default: SQLite in
	// `passwordless.db` in Caddy's data directory.
	Storage *StorageConfig `json:"storage,omitempty"`

	// Number of digits in a code, 6 to 10. Default: 6.
	CodeLength int `json:"code_length,omitempty"`

	// How long a code can be redeemed. Default: 15m.
	CodeTTL caddy.Duration `json:"code_ttl,omitempty"`

	// Wrong guesses one code survives; it dies on the last. Default: 5.
	MaxAttempts int `json:"max_attempts,omitempty"`

	// Whether an unknown email or number becomes a new user on its first
	// login. When false, unknown aliases get the same answers as known
	// ones but nothing is sent. Default: true.
	RegisterNewUsers *bool `json:"register_new_users,omitempty"`

	// Accounts with a fixed code that is never sent, for app store
	// reviewers or automated tests. Anyone who knows the code can log in
	// as that account: use a long code and a throwaway account.
	DemoUsers []DemoUser `json:"demo_users,omitempty"`

	// Login by email. Without it, the email endpoints answer 404.
	Email *EmailConfig `json:"email,omitempty"`

	// Login by SMS. Without it, the mobile endpoints answer 404.
	SMS *SMSConfig `json:"sms,omitempty"`

	// How tokens are signed and how long they live.
	JWT *JWTConfig `json:"jwt,omitempty"`

	// Limits on sending codes. Defaults apply when absent.
	RateLimit *RateLimitConfig `json:"rate_limit,omitempty"`

	// Paths (Caddy path matcher syntax) that need a valid token; any
	// signed-in user may open them. Default: `/*` when ProtectRules is
	// empty too. The endpoints under the prefix are never protected.
	Protect []string `json:"protect,omitempty"`

	// Paths that need a signed-in user whom a rule admits (by role, email
	// or number), checked before Protect. The first rule whose paths
	// match decides; a user it does not admit gets 403.
	ProtectRules []ProtectRule `json:"protect_rules,omitempty"`

	// Paths that pass without a token even though Protect covers them.
	Public []string `json:"public,omitempty"`

	// Who shares users, sessions, keys, codes and limits: handlers with
	// the same store and realm are one sign-in (single sign-on), and the
	// tokens of one realm are refused by every other. Handlers that share
	// a realm must agree on who may sign in. Default: `default`.
	Realm string `json:"realm,omitempty"`

	// Who may sign in: addresses (`alice@example.com`), domains
	// (`*@example.com`), subdomains (`*@*.example.com`), numbers
	// (`+15551234567`) or number prefixes (`+44*`). With Allow or
	// AllowFile set, an alias outside every pattern gets exactly the
	// answers of an unknown alias with registration closed, and a user
	// none of whose aliases fits any more is signed out within seconds.
	// Default: anyone (as RegisterNewUsers says).
	Allow []string `json:"allow,omitempty"`

	// A file of patterns as in Allow, one a line, each optionally followed
	// by roles that users matching it hold: `*@example.com staff`. `#`
	// starts a comment. It is read again within a second of a change; a
	// broken version is logged and the last good one kept.
	AllowFile string `json:"allow_file,omitempty"`

	// Where browsers are sent to sign in, an absolute URL such as
	// `https://auth.example.com/auth/login`: the sign-in page of the block
	// that serves every host of the domain. Protection and {prefix}/check
	// send a signed-out browser there, with the page it asked for as an
	// absolute `next`, when its host is one of ReturnHosts. Default: none;
	// redirects stay on the host (`{prefix}/login?next=<path>`).
	LoginURL string `json:"login_url,omitempty"`

	// The domain the session cookie is set for, such as `example.com`:
	// one sign-in then serves every host of the domain. Every one of them
	// receives the cookie and can plant one, so give only a domain whose
	// hosts are all yours. On HTTPS the cookie is `__Secure-pwl_session`.
	// Default: none; the cookie is the host's own (`__Host-pwl_session`).
	CookieDomain string `json:"cookie_domain,omitempty"`

	// Hosts an absolute `next` may lead to after sign-in and sign-out:
	// `app.example.com`, or `*.example.com` for its subdomains. Ports are
	// not compared; login_url's host is always allowed. Any other `next`
	// becomes `/`. Default: CookieDomain and its subdomains, else none.
	ReturnHosts []string `json:"return_hosts,omitempty"`

	// Send upstreams, and {prefix}/check's answers, `X-Auth-Assertion`: a
	// JWT of at most 60 seconds signed with the current key, whose `aud`
	// is the host the client asked for, so a backend can verify who the
	// user is with {prefix}/jwks.json instead of trusting the network. It
	// is never accepted as a credential. Not with HS256.
	Assertion bool `json:"assertion,omitempty"`

	// Sign-in with passkeys (WebAuthn), beside codes. Without it,
	// {prefix}/passkeys answers 404.
	Passkeys *PasskeysConfig `json:"passkeys,omitempty"`

	// How the pages look (name, logo, accent colour, own templates) and
	// which languages they and the API's messages speak.
	Branding *BrandingConfig `json:"branding,omitempty"`

	store   Store
	release func() error
	hmacKey []byte
	keys    *keySet
	senders map[AliasKind]Sender
	outbox  *outbox
	protect caddyhttp.MatchPath
	// protectAll is true for the default `protect /*`.
	protectAll  bool
	public      caddyhttp.MatchPath
	logger      *zap.Logger
	verified    *tokenCache
	routes      map[string]endpoint // built once at provision
	auditor     auditor
	access      *accessControl
	realmEntry  *realmEntry
	loginURL    *url.URL
	returnHosts returnHosts
	assertions  *assertionCache
	pages       *pageSet
}

// CaddyModule returns the Caddy module information.
func (Passwordless) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.passwordless",
		New: func() caddy.Module { return new(Passwordless) },
	}
}

const (
	defaultPrefix      = "/auth"
	defaultCodeLength  = 6
	defaultCodeTTL     = 15 * time.Minute
	defaultMaxAttempts = 5
	defaultTokenTTL    = 15 * time.Minute
	defaultRefreshTTL  = 30 * 24 * time.Hour
	minHMACSecretLen   = 32
)

// Provision fills in defaults, resolves placeholders such as {env.X} (so
// secrets never appear in the adapted JSON), opens the store and loads keys.
// Each part provisions itself; this is the order they are wired in.
func (p *Passwordless) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	// The module logger is http.handlers.passwordless: audit is below it.
	p.auditor = auditor{p.logger.Named("audit")}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	repl := caddy.NewReplacer()
	env := func(s *string) { *s = repl.ReplaceKnown(*s, "") }

	if p.Prefix == "" {
		p.Prefix = defaultPrefix
	}
	if p.Realm == "" {
		p.Realm = defaultRealm
	}
	p.Prefix = "/" + strings.Trim(p.Prefix, "/")
	if p.Prefix == "/" {
		// The endpoints need a path of their own, apart from the site.
		return errors.New("prefix must be a path below / such as /auth")
	}
	p.provisionCodes(env)
	if p.JWT == nil {
		p.JWT = new(JWTConfig)
	}
	p.JWT.provision(env)
	if p.RateLimit == nil {
		p.RateLimit = new(RateLimitConfig)
	}
	p.RateLimit.provision()
	if p.Storage == nil {
		p.Storage = new(StorageConfig)
	}
	p.Storage.provision(env)
	if err := p.provisionProtect(ctx); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := p.provisionSSO(env); err != nil {
		return err
	}
	env(&p.AllowFile)
	var err error
	if p.access, err = newAccessControl(p.Allow, p.AllowFile, p.DemoUsers, p.logger); err != nil {
		return err
	}
	if err := p.provisionSenders(env); err != nil {
		return err
	}
	if p.pages, err = p.Branding.provision(env); err != nil {
		return fmt.Errorf("branding: %w", err)
	}

	if p.store, p.release, err = p.Storage.open(); err != nil {
		return err
	}
	if err := p.joinRealm(ctx); err != nil {
		return err
	}
	p.hmacKey, err = p.store.Secret(ctx, realmKey(p.Realm, "code_hmac_key"), func() ([]byte, error) { return randomBytes(32) })
	if err != nil {
		return fmt.Errorf("code key: %w", err)
	}
	p.keys, err = loadKeys(ctx, p.JWT, p.store, p.Realm)
	if err != nil {
		return fmt.Errorf("jwt: %w", err)
	}
	if err := p.provisionPasskeys(ctx, env); err != nil {
		return fmt.Errorf("passkeys: %w", err)
	}
	p.verified = newTokenCache(tokenCacheSize)
	p.assertions = newAssertionCache(tokenCacheSize)
	p.routes = p.endpoints()
	p.outbox = newOutbox(p.store, p.senders, p.logger, p.outboxQueue, p.message)
	return nil
}

// provisionSenders sets up a sender for each configured channel.
func (p *Passwordless) provisionSenders(env func(*string)) error {
	p.senders = make(map[AliasKind]Sender)
	if p.Email != nil {
		s, err := p.Email.provision(env, p.logger)
		if err != nil {
			return fmt.Errorf("email: %w", err)
		}
		p.senders[KindEmail] = s
	}
	if p.SMS != nil {
		s, err := p.SMS.provision(env, p.logger)
		if err != nil {
			return fmt.Errorf("sms: %w", err)
		}
		p.senders[KindMobile] = s
	}
	return nil
}

// Validate checks the configuration; Provision calls it after defaults and
// placeholders are in place. Each rule is one checker, which the Caddyfile
// parser calls too, so that its error names the line.
func (p *Passwordless) Validate() error {
	if err := p.validateCodes(); err != nil {
		return err
	}
	if err := checkRealm(p.Realm); err != nil {
		return err
	}
	if err := p.JWT.validate(); err != nil {
		return err
	}
	if p.RateLimit != nil && p.RateLimit.SendInterval != nil {
		if err := p.RateLimit.validate(); err != nil {
			return err
		}
	}
	if p.Email != nil {
		if err := p.Email.validate(); err != nil {
			return fmt.Errorf("email: %w", err)
		}
	}
	return nil
}

// Cleanup stops the delivery workers and releases the store; the last
// user of a database file closes it.
func (p *Passwordless) Cleanup() error {
	if p.outbox != nil {
		p.outbox.close()
	}
	p.access.close()
	p.leaveRealm()
	if p.release != nil {
		return p.release()
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Passwordless)(nil)
	_ caddy.Validator             = (*Passwordless)(nil)
	_ caddy.CleanerUpper          = (*Passwordless)(nil)
	_ caddyhttp.MiddlewareHandler = (*Passwordless)(nil)
)
