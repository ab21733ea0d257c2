package passwordless

import (
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
//		passkeys {
//			rp_id <domain>
//			rp_name <name>
//			origins <origin...>
//			user_verification required|preferred|discouraged
//			timeout 5m
//			max_per_user 10
//		}
//		branding {
//			name <site name>
//			logo <https URL or /path>
//			color <#rrggbb>
//			templates <dir>
//			languages <lang...>
//			default_language <lang>
//		}
//	}
func (p *Passwordless) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	var protects []ProtectRule
	defer func() { p.Protect, p.ProtectRules = protectConfig(protects) }()
	var ssoAt ssoPlaces
	for d.NextBlock(0) {
		switch d.Val() {
		case "login_url", "cookie_domain", "return_hosts", "assertion":
			if err := p.unmarshalSSO(d, &ssoAt); err != nil {
				return err
			}
		case "prefix":
			if err := oneArg(d, &p.Prefix); err != nil {
				return err
			}
			if p.Prefix == "" || p.Prefix[0] != '/' || strings.Trim(p.Prefix, "/") == "" {
				return d.Errf("prefix must be a path below / such as /auth, not %q", p.Prefix)
			}
		case "storage":
			p.Storage = new(StorageConfig)
			if err := p.Storage.unmarshal(d); err != nil {
				return err
			}
		case "code_length":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if err := checkCodeLength(n); err != nil {
				return d.Err(err.Error())
			}
			p.CodeLength = n
		case "code_ttl":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if err := checkCodeTTL(dur); err != nil {
				return d.Err(err.Error())
			}
			p.CodeTTL = caddy.Duration(dur)
		case "max_attempts":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if err := checkMaxAttempts(n); err != nil {
				return d.Err(err.Error())
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
		case "passkeys":
			if p.Passkeys != nil {
				return d.Err("passkeys is given twice")
			}
			p.Passkeys = new(PasskeysConfig)
			if err := p.Passkeys.unmarshal(d); err != nil {
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
		case "branding":
			if p.Branding != nil {
				return d.Err("branding is given twice")
			}
			p.Branding = new(BrandingConfig)
			if err := p.Branding.unmarshal(d); err != nil {
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
			if err := checkRealm(p.Realm); err != nil {
				return d.Err(err.Error())
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
	if err := p.checkSSO(ssoAt); err != nil {
		return err
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
