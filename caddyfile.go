package passwordless

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("passwordless", parseCaddyfile)
	// Among the auth handlers, so a Caddyfile needs no order line.
	httpcaddyfile.RegisterDirectiveOrder("passwordless", httpcaddyfile.After, "forward_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(Passwordless)
	if err := p.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return p, err
	}
	h.Reset()
	h.Next()
	return p, adaptRealm(h.State, p, h.File()+":"+strconv.Itoa(h.Line()))
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	passwordless {
//		prefix /auth
//		storage sqlite <file> | storage postgres <connection string>
//		code_length 6
//		code_ttl 15m
//		max_attempts 5
//		register_new_users true
//		demo_user <alias> <code>
//		email {
//			from "Example <noreply@example.com>"
//			subject "Your login code"
//			smtp <host:port> {
//				username <user>
//				password <password>
//				tls starttls|implicit|none
//				timeout 10s
//			}
//			log
//			text_template <file>
//			html_template <file>
//			link_base https://example.com
//		}
//		sms {
//			twilio {
//				account_sid <sid>
//				auth_token <token>
//				from <number> | messaging_service_sid <sid>
//				api_url <url>
//				timeout 10s
//			}
//			log
//			message "Use this code to log in: {code}"
//			allowed_country_codes +1 +44
//		}
//		rate_limit {
//			send_interval 60s
//			per_alias 5 1h
//			per_ip 30 1h
//			failed_per_ip 20 1h
//		}
//		jwt {
//			algorithm EdDSA|ES256|RS256|HS256
//			secret <secret>...
//			key_file <file>...
//			ttl 15m
//			refresh_ttl 720h
//			issuer <iss>
//			audience <aud>
//		}
//		protect <paths...> [{
//			role <role...>
//			email <pattern...>
//			mobile <pattern...>
//		}]
//		public <paths...>
//		allow <pattern...>
//		allow_file <file>
//		realm <name>
//		login_url <url>
//		cookie_domain <domain>
//		return_hosts <host|*.domain...>
//		assertion
//	}
func (p *Passwordless) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	var protects []ProtectRule
	defer func() { p.Protect, p.ProtectRules = protectConfig(protects) }()
	// Where options that are checked against each other were given, for
	// the error.
	var loginAt, assertionAt string
	for d.NextBlock(0) {
		switch d.Val() {
		case "login_url":
			loginAt = where(d)
			if err := oneArg(d, &p.LoginURL); err != nil {
				return err
			}
			if _, err := checkLoginURL(p.LoginURL); err != nil && !hasPlaceholder(p.LoginURL) {
				return d.WrapErr(err)
			}
		case "cookie_domain":
			if err := oneArg(d, &p.CookieDomain); err != nil {
				return err
			}
			if err := checkDomainName(p.CookieDomain); err != nil && !hasPlaceholder(p.CookieDomain) {
				return d.Errf("cookie_domain: %v", err)
			}
		case "return_hosts":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if _, err := parseHostPattern(a); err != nil && !hasPlaceholder(a) {
					return d.Errf("return_hosts: %v", err)
				}
			}
			p.ReturnHosts = append(p.ReturnHosts, args...)
		case "assertion":
			assertionAt = where(d)
			if d.NextArg() {
				return d.ArgErr()
			}
			p.Assertion = true
		case "prefix":
			if err := oneArg(d, &p.Prefix); err != nil {
				return err
			}
			if p.Prefix == "" || p.Prefix[0] != '/' || strings.Trim(p.Prefix, "/") == "" {
				return d.Errf("prefix must be a path below / such as /auth, not %q", p.Prefix)
			}
		case "storage":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("storage needs a driver and its argument: storage sqlite <file> or storage postgres <connection string>")
			}
			if args[0] != "sqlite" && args[0] != "postgres" {
				return d.Errf("unknown storage driver %q (sqlite or postgres)", args[0])
			}
			p.Storage = &StorageConfig{Driver: args[0], DSN: args[1]}
		case "code_length":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if n < 6 || n > 10 {
				return d.Errf("code_length must be between 6 and 10, not %d", n)
			}
			p.CodeLength = n
		case "code_ttl":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if dur > 24*time.Hour {
				return d.Errf("code_ttl must be at most 24h, not %s", dur)
			}
			p.CodeTTL = caddy.Duration(dur)
		case "max_attempts":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if n < 1 || n > 100 {
				return d.Errf("max_attempts must be between 1 and 100, not %d", n)
			}
			p.MaxAttempts = n
		case "register_new_users":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				return d.Errf("register_new_users must be true or false, not %q", v)
			}
			p.RegisterNewUsers = &b
		case "demo_user":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("demo_user needs an alias and a code")
			}
			p.DemoUsers = append(p.DemoUsers, DemoUser{Alias: args[0], Code: args[1]})
		case "email":
			if p.Email != nil {
				return d.Err("email is given twice")
			}
			p.Email = new(EmailConfig)
			if err := p.Email.unmarshal(d); err != nil {
				return err
			}
		case "sms":
			if p.SMS != nil {
				return d.Err("sms is given twice")
			}
			p.SMS = new(SMSConfig)
			if err := p.SMS.unmarshal(d); err != nil {
				return err
			}
		case "jwt":
			if p.JWT != nil {
				return d.Err("jwt is given twice")
			}
			p.JWT = new(JWTConfig)
			if err := p.JWT.unmarshal(d); err != nil {
				return err
			}
		case "rate_limit":
			if p.RateLimit != nil {
				return d.Err("rate_limit is given twice")
			}
			p.RateLimit = new(RateLimitConfig)
			if err := p.RateLimit.unmarshal(d); err != nil {
				return err
			}
		case "protect":
			rule, err := unmarshalProtect(d)
			if err != nil {
				return err
			}
			protects = append(protects, rule)
		case "allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if _, err := parsePattern(a); err != nil {
					return d.Errf("allow: %v", err)
				}
			}
			p.Allow = append(p.Allow, args...)
		case "allow_file":
			if p.AllowFile != "" {
				return d.Err("allow_file is given twice")
			}
			if err := oneArg(d, &p.AllowFile); err != nil {
				return err
			}
		case "realm":
			if err := oneArg(d, &p.Realm); err != nil {
				return err
			}
			if !realmName.MatchString(p.Realm) {
				return d.Errf("realm %q: use letters, digits, and _ . - inside (at most 64)", p.Realm)
			}
		case "public":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			p.Public = append(p.Public, args...)
		default:
			return d.Errf("unrecognized passwordless subdirective %q", d.Val())
		}
	}
	if u, err := checkLoginURL(p.LoginURL); err == nil && !hasPlaceholder(p.CookieDomain) {
		if err := checkLoginInDomain(u, strings.ToLower(p.CookieDomain)); err != nil {
			return fmt.Errorf("%w, at %s", err, loginAt)
		}
	}
	if p.Assertion && p.JWT != nil && p.JWT.Algorithm == "HS256" {
		return fmt.Errorf("%w, at %s", errAssertionHS256, assertionAt)
	}
	return nil
}

// where names the current token's place as caddyfile errors do.
func where(d *caddyfile.Dispenser) string {
	return d.File() + ":" + strconv.Itoa(d.Line())
}

// hasPlaceholder reports whether s is resolved only at provision, such as
// {env.LOGIN_URL}: it is checked then.
func hasPlaceholder(s string) bool { return strings.Contains(s, "{") }

func (e *EmailConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "from":
			if err := oneArg(d, &e.From); err != nil {
				return err
			}
		case "subject":
			if err := oneArg(d, &e.Subject); err != nil {
				return err
			}
		case "log":
			if d.NextArg() {
				return d.ArgErr()
			}
			e.Log = true
		case "text_template":
			if err := oneArg(d, &e.TextTemplate); err != nil {
				return err
			}
		case "html_template":
			if err := oneArg(d, &e.HTMLTemplate); err != nil {
				return err
			}
		case "link_base":
			if err := oneArg(d, &e.LinkBase); err != nil {
				return err
			}
		case "smtp":
			s := new(SMTPConfig)
			if err := oneArg(d, &s.Address); err != nil {
				return err
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "username":
					if err := oneArg(d, &s.Username); err != nil {
						return err
					}
				case "password":
					if err := oneArg(d, &s.Password); err != nil {
						return err
					}
				case "tls":
					if err := oneArg(d, &s.TLS); err != nil {
						return err
					}
					switch s.TLS {
					case "starttls", "implicit", "none":
					default:
						return d.Errf("smtp tls must be starttls, implicit or none, not %q", s.TLS)
					}
				case "timeout":
					dur, err := durationArg(d)
					if err != nil {
						return err
					}
					s.Timeout = caddy.Duration(dur)
				default:
					return d.Errf("unrecognized smtp subdirective %q", d.Val())
				}
			}
			e.SMTP = s
		default:
			return d.Errf("unrecognized email subdirective %q", d.Val())
		}
	}
	if e.Log && e.SMTP != nil {
		return d.Err("email: choose smtp or log, not both")
	}
	if e.SMTP != nil && e.From == "" {
		return d.Err("email: smtp needs a from address")
	}
	return nil
}

func (c *SMSConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "log":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.Log = true
		case "message":
			if err := oneArg(d, &c.Message); err != nil {
				return err
			}
		case "allowed_country_codes":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if !callingCode.MatchString(a) {
					return d.Errf("allowed_country_codes: %q is not a calling code like +1 or +44", a)
				}
			}
			c.AllowedCountryCodes = append(c.AllowedCountryCodes, args...)
		case "twilio":
			if d.NextArg() {
				return d.ArgErr()
			}
			tc := new(TwilioConfig)
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				var dst *string
				switch d.Val() {
				case "account_sid":
					dst = &tc.AccountSID
				case "auth_token":
					dst = &tc.AuthToken
				case "from":
					dst = &tc.From
				case "messaging_service_sid":
					dst = &tc.MessagingServiceSID
				case "api_url":
					dst = &tc.APIURL
				case "timeout":
					dur, err := durationArg(d)
					if err != nil {
						return err
					}
					tc.Timeout = caddy.Duration(dur)
					continue
				default:
					return d.Errf("unrecognized twilio subdirective %q", d.Val())
				}
				if err := oneArg(d, dst); err != nil {
					return err
				}
			}
			if tc.AccountSID == "" || tc.AuthToken == "" {
				return d.Err("twilio needs account_sid and auth_token")
			}
			if (tc.From == "") == (tc.MessagingServiceSID == "") {
				return d.Err("twilio needs one of from or messaging_service_sid")
			}
			c.Twilio = tc
		default:
			return d.Errf("unrecognized sms subdirective %q", d.Val())
		}
	}
	if c.Log && c.Twilio != nil {
		return d.Err("sms: choose twilio or log, not both")
	}
	return nil
}

func (j *JWTConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "algorithm":
			if err := oneArg(d, &j.Algorithm); err != nil {
				return err
			}
			switch j.Algorithm {
			case "EdDSA", "ES256", "RS256", "HS256":
			default:
				return d.Errf("jwt algorithm must be EdDSA, ES256, RS256 or HS256, not %q", j.Algorithm)
			}
		case "secret":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			j.Secrets = append(j.Secrets, args...)
		case "key_file":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			j.KeyFiles = append(j.KeyFiles, args...)
		case "ttl", "refresh_ttl":
			name := d.Val()
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if name == "ttl" {
				j.TTL = caddy.Duration(dur)
			} else {
				j.RefreshTTL = caddy.Duration(dur)
			}
		case "issuer":
			if err := oneArg(d, &j.Issuer); err != nil {
				return err
			}
		case "audience":
			if err := oneArg(d, &j.Audience); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized jwt subdirective %q", d.Val())
		}
	}
	return nil
}

func (rl *RateLimitConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "send_interval":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < 0 {
				return d.Errf("send_interval: %q is not a duration (like 60s; 0s turns the check off)", v)
			}
			iv := caddy.Duration(dur)
			rl.SendInterval = &iv
		case "per_alias", "per_ip", "failed_per_ip":
			name := d.Val()
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("%s needs a count and a window, like: %s 5 1h", name, name)
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return d.Errf("%s: the count must be a whole number of at least 1, not %q", name, args[0])
			}
			w, err := caddy.ParseDuration(args[1])
			if err != nil || w <= 0 {
				return d.Errf("%s: the window must be a positive duration (like 1h), not %q", name, args[1])
			}
			l := &Limit{Count: n, Window: caddy.Duration(w)}
			switch name {
			case "per_alias":
				rl.PerAlias = l
			case "per_ip":
				rl.PerIP = l
			default:
				rl.FailedPerIP = l
			}
		default:
			return d.Errf("unrecognized rate_limit subdirective %q", d.Val())
		}
	}
	return nil
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	name := d.Val()
	var v string
	if err := oneArg(d, &v); err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, d.Errf("%s must be a whole number, not %q", name, v)
	}
	return n, nil
}

// durationArg reads one positive duration such as 15m or 1h30m.
func durationArg(d *caddyfile.Dispenser) (time.Duration, error) {
	name := d.Val()
	var v string
	if err := oneArg(d, &v); err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: %q is not a duration (like 90s, 15m or 1h)", name, v)
	}
	if dur <= 0 {
		return 0, d.Errf("%s must be positive, not %s", name, v)
	}
	return dur, nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Passwordless)(nil)
