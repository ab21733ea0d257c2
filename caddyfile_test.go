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
	for _, tc := range []struct{ name, input, want string }{
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
		{"prefix without slash", "passwordless {\n prefix auth\n}", "must start with /"},
		{"demo user one arg", "passwordless {\n demo_user a@example.com\n}", "alias and a code"},
		{"argument on directive", "passwordless extra", "wrong argument count"},
		{"max_attempts zero", "passwordless {\n max_attempts 0\n}", "between 1 and 100"},
	} {
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
		{"missing template", "passwordless {\n email {\n text_template /nonexistent/t.txt\n }\n}", "text_template"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Passwordless
			if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatal(err)
			}
			p.Storage = &StorageConfig{Driver: "sqlite", DSN: t.TempDir() + "/p.db"}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
			defer cancel()
			err := p.Provision(ctx)
			defer p.Cleanup()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
