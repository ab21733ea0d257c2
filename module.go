// Package passwordless is a Caddy module that logs users in with one-time
// codes sent by email or SMS, issues JWTs, and checks them before Caddy
// proxies protected requests. It keeps the HTTP API of drfpasswordless.
package passwordless

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
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
	probes      *probeThrottle
	access      *accessControl
	realmEntry  *realmEntry
	loginURL    *url.URL
	returnHosts returnHosts
	assertions  *assertionCache
}

// StorageConfig chooses the store.
type StorageConfig struct {
	// The store: `sqlite` (one instance) or `postgres` (several instances
	// sharing one state). Default: sqlite.
	Driver string `json:"driver,omitempty"`
	// For sqlite, the database file. Default: `passwordless.db` in Caddy's
	// data directory. For postgres, the connection string (URL or
	// key=value form); use `{env.DATABASE_URL}`. Tables go into the schema
	// `passwordless` unless the string sets a search_path.
	DSN string `json:"dsn,omitempty"`
}

// DemoUser is an account that logs in with a fixed code.
type DemoUser struct {
	// The email address or E.164 number of the account.
	Alias string `json:"alias"`
	// The code that logs it in; it is never sent.
	Code string `json:"code"`
}

// EmailConfig configures login by email.
type EmailConfig struct {
	// The From header, e.g. `Example <noreply@example.com>`. Required with smtp.
	From string `json:"from,omitempty"`
	// The Subject header. Default: `Your login code`.
	Subject string `json:"subject,omitempty"`
	// The SMTP server that sends the mail. Without it, messages are
	// written to Caddy's log (for development only).
	SMTP *SMTPConfig `json:"smtp,omitempty"`
	// Write messages to Caddy's log instead of sending them. For
	// development: codes appear in the log.
	Log bool `json:"log,omitempty"`
	// A Go text/template file for the text part; `{code}` or `{{.Code}}`
	// stands for the code, `{{.Minutes}}` for its lifetime, `{{.Purpose}}`
	// is `login` or `verify`. Default: a built-in message.
	TextTemplate string `json:"text_template,omitempty"`
	// A Go html/template file for the HTML part, with the same fields.
	// Default: a built-in message.
	HTMLTemplate string `json:"html_template,omitempty"`
	// The site's address as users reach it, such as
	// `https://example.com`. When set, login emails also carry a sign-in
	// link to the browser sign-in page, `{{.Link}}` in templates. It is
	// configured rather than taken from the request's Host header, which a
	// client chooses: a forged Host would send codes to another site.
	LinkBase string `json:"link_base,omitempty"`
}

// SMSConfig configures login by text message.
type SMSConfig struct {
	// Send through Twilio. Without it, messages are written to Caddy's
	// log (for development only).
	Twilio *TwilioConfig `json:"twilio,omitempty"`
	// Write messages to Caddy's log instead of sending them. For
	// development: codes appear in the log.
	Log bool `json:"log,omitempty"`
	// The text of the message, a Go text/template where `{code}` or
	// `{{.Code}}` stands for the code. Default:
	// `Use this code to log in: {code}`.
	Message string `json:"message,omitempty"`
	// Calling codes, such as `+1` or `+44`, that numbers must start with.
	// Others are refused with 400 before anything is sent: SMS pumping
	// fraud aims at expensive destinations. Default: any.
	AllowedCountryCodes []string `json:"allowed_country_codes,omitempty"`
}

// SMTPConfig is an SMTP submission server.
type SMTPConfig struct {
	// host:port of the server.
	Address string `json:"address"`
	// Username for SMTP AUTH; none when empty. Use `{env.SMTP_USER}`.
	Username string `json:"username,omitempty"`
	// Password for SMTP AUTH. Use `{env.SMTP_PASSWORD}`.
	Password string `json:"password,omitempty"`
	// `starttls` (required, the default), `implicit` (TLS from the first
	// byte, usually port 465) or `none` (only for a relay on localhost).
	TLS string `json:"tls,omitempty"`
	// How long connecting and sending may take. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// JWTConfig configures the access tokens.
type JWTConfig struct {
	// `EdDSA` (default), `ES256`, `RS256` or `HS256`.
	Algorithm string `json:"algorithm,omitempty"`
	// HS256 secrets, each at least 32 bytes; the first signs, all verify.
	// Use `{env.JWT_SECRET}`.
	Secrets []string `json:"secrets,omitempty"`
	// PEM private key files for EdDSA, ES256 or RS256; the first signs,
	// all verify (by kid). Default: a key generated once and kept in
	// storage.
	KeyFiles []string `json:"key_files,omitempty"`
	// Access token lifetime. Default: 15m.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// Refresh token lifetime. Default: 720h (30 days).
	RefreshTTL caddy.Duration `json:"refresh_ttl,omitempty"`
	// The `iss` claim, checked on every request when set.
	Issuer string `json:"issuer,omitempty"`
	// The `aud` claim, checked on every request when set.
	Audience string `json:"audience,omitempty"`
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
func (p *Passwordless) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	// The module logger is http.handlers.passwordless: audit is below it.
	p.auditor = auditor{p.logger.Named("audit")}
	p.probes = new(probeThrottle)
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
	if p.CodeLength == 0 {
		p.CodeLength = defaultCodeLength
	}
	if p.CodeTTL == 0 {
		p.CodeTTL = caddy.Duration(defaultCodeTTL)
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = defaultMaxAttempts
	}
	if p.RegisterNewUsers == nil {
		t := true
		p.RegisterNewUsers = &t
	}
	if p.JWT == nil {
		p.JWT = new(JWTConfig)
	}
	j := p.JWT
	if j.Algorithm == "" {
		j.Algorithm = "EdDSA"
	}
	if j.TTL == 0 {
		j.TTL = caddy.Duration(defaultTokenTTL)
	}
	if j.RefreshTTL == 0 {
		j.RefreshTTL = caddy.Duration(defaultRefreshTTL)
	}
	for i := range j.Secrets {
		env(&j.Secrets[i])
	}
	for i := range j.KeyFiles {
		env(&j.KeyFiles[i])
	}
	env(&j.Issuer)
	env(&j.Audience)
	for i := range p.DemoUsers {
		env(&p.DemoUsers[i].Alias)
		env(&p.DemoUsers[i].Code)
	}
	if p.RateLimit == nil {
		p.RateLimit = new(RateLimitConfig)
	}
	p.RateLimit.provision()
	if p.Storage == nil {
		p.Storage = new(StorageConfig)
	}
	p.Storage.provision(env)
	if len(p.Protect) == 0 && len(p.ProtectRules) == 0 {
		p.Protect = []string{"/*"}
	}
	for i := range p.ProtectRules {
		if err := p.ProtectRules[i].provision(ctx); err != nil {
			return fmt.Errorf("protect %s: %w", strings.Join(p.ProtectRules[i].Paths, " "), err)
		}
	}
	p.protect = caddyhttp.MatchPath(p.Protect)
	p.protectAll = len(p.Protect) == 1 && p.Protect[0] == "/*"
	p.public = caddyhttp.MatchPath(p.Public)
	if err := p.protect.Provision(ctx); err != nil {
		return fmt.Errorf("protect: %w", err)
	}
	if err := p.public.Provision(ctx); err != nil {
		return fmt.Errorf("public: %w", err)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := p.provisionSSO(env); err != nil {
		return err
	}
	env(&p.AllowFile)
	if err := p.provisionAccess(); err != nil {
		return err
	}

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

	var err error
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
	p.verified = newTokenCache(tokenCacheSize)
	p.assertions = newAssertionCache(tokenCacheSize)
	p.routes = p.endpoints()
	p.outbox = newOutbox(p)
	return nil
}

// Validate checks the configuration; Provision calls it after defaults and
// placeholders are in place.
func (p *Passwordless) Validate() error {
	if p.CodeLength < 6 || p.CodeLength > 10 {
		return fmt.Errorf("code_length must be between 6 and 10, not %d", p.CodeLength)
	}
	if p.CodeTTL < 0 || time.Duration(p.CodeTTL) > 24*time.Hour {
		return fmt.Errorf("code_ttl must be positive and at most 24h, not %s", time.Duration(p.CodeTTL))
	}
	if p.MaxAttempts < 1 || p.MaxAttempts > 100 {
		return fmt.Errorf("max_attempts must be between 1 and 100, not %d", p.MaxAttempts)
	}
	if !realmName.MatchString(p.Realm) {
		return fmt.Errorf("realm %q: use letters, digits, and _ . - inside (at most 64)", p.Realm)
	}
	j := p.JWT
	switch j.Algorithm {
	case "EdDSA", "ES256", "RS256":
		if len(j.Secrets) > 0 {
			return fmt.Errorf("jwt: secret is for HS256 only; %s uses key_file or a generated key", j.Algorithm)
		}
	case "HS256":
		if len(j.Secrets) == 0 {
			return errors.New("jwt: HS256 needs a secret")
		}
		if len(j.KeyFiles) > 0 {
			return errors.New("jwt: key_file is not for HS256; use secret")
		}
		for _, s := range j.Secrets {
			// Shorter HMAC keys can be brute-forced offline from any token.
			if len(s) < minHMACSecretLen {
				return fmt.Errorf("jwt: an HS256 secret must be at least %d bytes (one is %d)", minHMACSecretLen, len(s))
			}
		}
	default:
		return fmt.Errorf("jwt: unsupported algorithm %q (EdDSA, ES256, RS256 or HS256)", j.Algorithm)
	}
	if j.TTL < 0 || j.RefreshTTL < 0 {
		return errors.New("jwt: ttl and refresh_ttl must be positive")
	}
	if p.RateLimit != nil && p.RateLimit.SendInterval != nil {
		if err := p.RateLimit.validate(); err != nil {
			return err
		}
	}
	for _, d := range p.DemoUsers {
		if _, err := parseAlias(d.Alias); err != nil {
			return fmt.Errorf("demo_user %q: %v", d.Alias, err)
		}
		if !isDigits(d.Code, p.CodeLength) {
			return fmt.Errorf("demo_user %q: the code must be %d digits", d.Alias, p.CodeLength)
		}
	}
	if p.Email != nil && p.Email.SMTP != nil {
		if p.Email.From == "" {
			return errors.New("email: smtp needs a from address")
		}
		switch p.Email.SMTP.TLS {
		case "", "starttls", "implicit", "none":
		default:
			return fmt.Errorf("email: smtp tls must be starttls, implicit or none, not %q", p.Email.SMTP.TLS)
		}
	}
	return nil
}

func (e *EmailConfig) provision(env func(*string), logger *zap.Logger) (*emailSender, error) {
	for _, s := range []*string{&e.From, &e.Subject, &e.TextTemplate, &e.HTMLTemplate, &e.LinkBase} {
		env(s)
	}
	if e.LinkBase != "" {
		u, err := url.Parse(e.LinkBase)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("link_base must be the site's address, like https://example.com, not %q", e.LinkBase)
		}
		e.LinkBase = strings.TrimSuffix(e.LinkBase, "/")
	}
	if e.Subject == "" {
		e.Subject = "Your login code"
	}
	if strings.ContainsAny(e.Subject, "\r\n") {
		return nil, errors.New("subject must be one line")
	}
	s := &emailSender{from: e.From, subject: e.Subject}
	if e.From != "" {
		if _, err := mail.ParseAddress(e.From); err != nil {
			return nil, fmt.Errorf("from %q: %v", e.From, err)
		}
	}
	textSrc, htmlSrc := defaultTextTemplate, defaultHTMLTemplate
	if e.TextTemplate != "" {
		b, err := os.ReadFile(e.TextTemplate)
		if err != nil {
			return nil, fmt.Errorf("text_template: %w", err)
		}
		textSrc = string(b)
	}
	if e.HTMLTemplate != "" {
		b, err := os.ReadFile(e.HTMLTemplate)
		if err != nil {
			return nil, fmt.Errorf("html_template: %w", err)
		}
		htmlSrc = string(b)
	}
	var err error
	if s.text, err = parseTextTemplate("text", textSrc); err != nil {
		return nil, fmt.Errorf("text_template: %w", err)
	}
	if s.html, err = parseHTMLTemplate("html", htmlSrc); err != nil {
		return nil, fmt.Errorf("html_template: %w", err)
	}
	// A template that cannot render a code is found now, not at the first login.
	probe := Message{To: "user@example.com", Code: "000000", Purpose: purposeLogin, TTL: time.Minute, Link: "https://example.com/auth/login"}
	if _, err := render(s.text, newTemplateData(probe)); err != nil {
		return nil, fmt.Errorf("text_template: %w", err)
	}
	if _, err := render(s.html, newTemplateData(probe)); err != nil {
		return nil, fmt.Errorf("html_template: %w", err)
	}
	s.log = &logSender{logger: logger, channel: "email", render: s.renderText}
	if e.SMTP != nil && !e.Log {
		c := *e.SMTP
		for _, f := range []*string{&c.Address, &c.Username, &c.Password} {
			env(f)
		}
		if c.TLS == "none" && c.Username != "" && !isLoopback(c.Address) {
			// A password, and then every code, would cross the network in clear.
			return nil, fmt.Errorf("smtp %s: username and password need tls starttls or implicit (tls none is for a relay on localhost)", c.Address)
		}
		s.smtp = &c
	}
	return s, nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

const defaultSMSMessage = "Use this code to log in: {code}"

var callingCode = regexp.MustCompile(`^\+[1-9][0-9]{0,3}$`)

func (c *SMSConfig) provision(env func(*string), logger *zap.Logger) (Sender, error) {
	for _, cc := range c.AllowedCountryCodes {
		if !callingCode.MatchString(cc) {
			return nil, fmt.Errorf("allowed_country_codes: %q is not a calling code like +1 or +44", cc)
		}
	}
	env(&c.Message)
	msg := c.Message
	if msg == "" {
		msg = defaultSMSMessage
	}
	body, err := parseTextTemplate("sms", msg)
	if err != nil {
		return nil, fmt.Errorf("message: %w", err)
	}
	probe := Message{To: "+15550000000", Code: "000000", Purpose: purposeLogin, TTL: time.Minute}
	if out, err := render(body, newTemplateData(probe)); err != nil || !strings.Contains(out, probe.Code) {
		return nil, fmt.Errorf("message must contain the code ({code}): %q", msg)
	}
	if c.Twilio == nil || c.Log {
		return &logSender{logger: logger, channel: "sms", render: func(m Message) (string, error) {
			return render(body, newTemplateData(m))
		}}, nil
	}
	// Resolved in a copy: the secrets live in memory only.
	tc := *c.Twilio
	for _, f := range []*string{&tc.AccountSID, &tc.AuthToken, &tc.From, &tc.MessagingServiceSID, &tc.APIURL} {
		env(f)
	}
	if tc.From != "" {
		if _, err := normalizeMobile(tc.From); err != nil {
			return nil, fmt.Errorf("twilio: from must be an E.164 number like +15551234567")
		}
	}
	return newTwilioSender(tc, body, logger)
}

// allowedNumber reports whether a normalised number is in one of the
// allowed calling codes. Calling codes are prefix-free, so a prefix test
// is exact.
func (p *Passwordless) allowedNumber(number string) bool {
	if p.SMS == nil || len(p.SMS.AllowedCountryCodes) == 0 {
		return true
	}
	for _, cc := range p.SMS.AllowedCountryCodes {
		if strings.HasPrefix(number, cc) {
			return true
		}
	}
	return false
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
