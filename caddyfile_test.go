package passwordless

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`passwordless {
		prefix /login
		storage sqlite /var/lib/pwl.db
		code_length 8
		code_ttl 10m
		max_attempts 3
		register_new_users false
		demo_user review@example.com 12345678
		email {
			from "Example <noreply@example.com>"
			subject "Your code"
			smtp smtp.example.com:587 {
				username {env.SMTP_USER}
				password {env.SMTP_PASSWORD}
				tls starttls
				timeout 5s
			}
			text_template /etc/caddy/code.txt
			html_template /etc/caddy/code.html
		}
		sms {
			twilio {
				account_sid {env.TWILIO_ACCOUNT_SID}
				auth_token {env.TWILIO_AUTH_TOKEN}
				messaging_service_sid MG123
				api_url http://127.0.0.1:9999
				timeout 3s
			}
			message "Code: {code}"
			allowed_country_codes +1 +44
		}
		rate_limit {
			send_interval 0s
			per_alias 3 30m
			per_ip 10 1h
		}
		jwt {
			algorithm HS256
			secret {env.JWT_SECRET} {env.OLD_JWT_SECRET}
			ttl 5m
			refresh_ttl 24h
			issuer https://example.com
			audience my-api
		}
		protect /api/* /admin/*
		public /api/health
	}`)
	var p Passwordless
	if err := p.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if p.Prefix != "/login" || p.Storage.DSN != "/var/lib/pwl.db" || p.CodeLength != 8 ||
		time.Duration(p.CodeTTL) != 10*time.Minute || p.MaxAttempts != 3 || *p.RegisterNewUsers {
		t.Errorf("top level: %+v", p)
	}
	if len(p.DemoUsers) != 1 || p.DemoUsers[0].Code != "12345678" {
		t.Errorf("demo users: %+v", p.DemoUsers)
	}
	s := p.Email.SMTP
	if p.Email.From != "Example <noreply@example.com>" || s.Address != "smtp.example.com:587" ||
		s.Username != "{env.SMTP_USER}" || s.TLS != "starttls" || time.Duration(s.Timeout) != 5*time.Second ||
		p.Email.TextTemplate != "/etc/caddy/code.txt" {
		t.Errorf("email: %+v smtp %+v", p.Email, s)
	}
	tw := p.SMS.Twilio
	if tw.AccountSID != "{env.TWILIO_ACCOUNT_SID}" || tw.MessagingServiceSID != "MG123" || tw.APIURL != "http://127.0.0.1:9999" ||
		time.Duration(tw.Timeout) != 3*time.Second || p.SMS.Message != "Code: {code}" || strings.Join(p.SMS.AllowedCountryCodes, " ") != "+1 +44" {
		t.Errorf("sms: %+v twilio %+v", p.SMS, tw)
	}
	rl := p.RateLimit
	if *rl.SendInterval != 0 || rl.PerAlias.Count != 3 || time.Duration(rl.PerAlias.Window) != 30*time.Minute || rl.PerIP.Count != 10 {
		t.Errorf("rate_limit: %+v %+v %+v", rl, rl.PerAlias, rl.PerIP)
	}
	j := p.JWT
	if j.Algorithm != "HS256" || len(j.Secrets) != 2 || time.Duration(j.TTL) != 5*time.Minute ||
		time.Duration(j.RefreshTTL) != 24*time.Hour || j.Issuer != "https://example.com" || j.Audience != "my-api" {
		t.Errorf("jwt: %+v", j)
	}
	if strings.Join(p.Protect, " ") != "/api/* /admin/*" || strings.Join(p.Public, " ") != "/api/health" {
		t.Errorf("paths: %v %v", p.Protect, p.Public)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	expectCaddyfileErrors(t, []caddyfileError{
		{"code_length too short", "passwordless {\n code_length 3\n}", "code_length must be between 6 and 10"},
		{"code_length not a number", "passwordless {\n code_length six\n}", "whole number"},
		{"unknown subdirective", "passwordless {\n bogus 1\n}", `unrecognized passwordless subdirective "bogus"`},
		{"missing argument", "passwordless {\n code_ttl\n}", "wrong argument count"},
		{"bad duration", "passwordless {\n code_ttl soon\n}", "not a duration"},
		{"negative duration", "passwordless {\n code_ttl -5m\n}", "must be positive"},
		{"bad bool", "passwordless {\n register_new_users maybe\n}", "true or false"},
		{"bad algorithm", "passwordless {\n jwt {\n algorithm none\n }\n}", "jwt algorithm must be"},
		{"bad tls", "passwordless {\n email {\n from a@example.com\n smtp h:25 {\n tls sometimes\n }\n }\n}", "smtp tls must be"},
		{"smtp without from", "passwordless {\n email {\n smtp h:25\n }\n}", "needs a from address"},
		{"unknown storage", "passwordless {\n storage redis x\n}", `unknown storage driver "redis"`},
		{"prefix without slash", "passwordless {\n prefix auth\n}", "must be a path below /"},
		{"prefix root", "passwordless {\n prefix /\n}", "must be a path below /"},
		{"demo user one arg", "passwordless {\n demo_user a@example.com\n}", "alias and a code"},
		{"argument on directive", "passwordless extra", "wrong argument count"},
		{"twilio without from", "passwordless {\n sms {\n twilio {\n account_sid AC1\n auth_token t\n }\n }\n}", "one of from or messaging_service_sid"},
		{"twilio unknown", "passwordless {\n sms {\n twilio {\n region us1\n }\n }\n}", `unrecognized twilio subdirective "region"`},
		{"bad country code", "passwordless {\n sms {\n allowed_country_codes 44\n }\n}", "not a calling code"},
		{"sms log and twilio", "passwordless {\n sms {\n log\n twilio {\n account_sid AC1\n auth_token t\n from +15550000000\n }\n }\n}", "not both"},
		{"rate limit count", "passwordless {\n rate_limit {\n per_ip many 1h\n }\n}", "whole number"},
		{"rate limit window", "passwordless {\n rate_limit {\n per_alias 5\n }\n}", "a count and a window"},
		{"rate limit interval", "passwordless {\n rate_limit {\n send_interval often\n }\n}", "not a duration"},
		{"max_attempts zero", "passwordless {\n max_attempts 0\n}", "between 1 and 100"},
		{"ipv6_prefix too long", "passwordless {\n rate_limit {\n ipv6_prefix 129\n }\n}", "ipv6_prefix must be between 16 and 128"},
		{"ipv6_prefix not a number", "passwordless {\n rate_limit {\n ipv6_prefix /64\n }\n}", "whole number"},
	})
}

// TestAdaptErrorsNameTheLine runs the whole Caddyfile adapter, as
// `caddy adapt` does.
func TestAdaptErrorsNameTheLine(t *testing.T) {
	input := "example.com {\n\tpasswordless {\n\t\tcode_length 3\n\t}\n}\n"
	_, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:3") {
		t.Fatalf("adapt error %v, want one naming Caddyfile:3", err)
	}
}

// TestAdaptKeepsSecretsOut checks that {env.X} stays a placeholder in the
// adapted JSON: it is only resolved at provision time, in memory.
func TestAdaptKeepsSecretsOut(t *testing.T) {
	t.Setenv("PWL_ADAPT_SECRET", "this-must-not-appear-in-json-0123456789")
	input := "example.com {\n\tpasswordless {\n\t\tjwt {\n\t\t\talgorithm HS256\n\t\t\tsecret {env.PWL_ADAPT_SECRET}\n\t\t}\n\t}\n}\n"
	out, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "this-must-not") || !strings.Contains(string(out), "{env.PWL_ADAPT_SECRET}") {
		t.Fatalf("adapted JSON: %s", out)
	}
	// And the directive orders itself: no `order` line was needed.
	if !strings.Contains(string(out), `"handler":"passwordless"`) {
		t.Fatalf("handler missing from %s", out)
	}
}

func TestProvisionErrors(t *testing.T) {
	for _, tc := range []struct{ name, input, want string }{
		{"short HS256 secret", "passwordless {\n jwt {\n algorithm HS256\n secret tooshort\n }\n}", "at least 32 bytes"},
		{"HS256 without secret", "passwordless {\n jwt {\n algorithm HS256\n }\n}", "needs a secret"},
		{"secret with EdDSA", "passwordless {\n jwt {\n secret " + strings.Repeat("x", 40) + "\n }\n}", "HS256 only"},
		{"demo code wrong length", "passwordless {\n demo_user a@example.com 123\n}", "must be 6 digits"},
		{"missing key file", "passwordless {\n jwt {\n key_file /nonexistent/key.pem\n }\n}", "reading JWT key"},
		{"password in clear", "passwordless {\n email {\n from a@example.com\n smtp smtp.example.com:25 {\n username u\n password p\n tls none\n }\n }\n}", "need tls starttls or implicit"},
		{"sms message without code", "passwordless {\n sms {\n message \"hello\"\n }\n}", "must contain the code"},
		{"twilio bad api_url", "passwordless {\n sms {\n twilio {\n account_sid AC1\n auth_token t0k\n from +15550000000\n api_url ftp://x\n }\n }\n}", "api_url"},
		{"missing template", "passwordless {\n email {\n text_template /nonexistent/t.txt\n }\n}", "text_template"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Passwordless
			if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatal(err)
			}
			expectProvisionError(t, &p, tc.want)
		})
	}
}

// caddyfileError is a passwordless block and a part of the error it must
// get.
type caddyfileError struct{ name, input, want string }

// expectCaddyfileErrors parses each input and checks that it fails with
// its error, naming the line.
func expectCaddyfileErrors(t *testing.T, cases []caddyfileError) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p Passwordless
			err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("error %q does not name the line", err)
			}
		})
	}
}

// expectProvisionError provisions p on a fresh SQLite file and checks that
// it fails with an error containing want.
func expectProvisionError(t *testing.T, p *Passwordless, want string) {
	t.Helper()
	p.Storage = &StorageConfig{Driver: "sqlite", DSN: t.TempDir() + "/p.db"}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	err := p.Provision(ctx)
	defer p.Cleanup()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}
