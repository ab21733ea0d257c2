package passwordless

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalPasskeys(t *testing.T) {
	var p Passwordless
	err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`passwordless {
		passkeys {
			rp_id example.com
			rp_name "Example Shop"
			origins https://example.com https://app.example.com:8443 android:apk-key-hash:abc123
			user_verification required
			timeout 2m
			max_per_user 3
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	c := p.Passkeys
	if c.RPID != "example.com" || c.RPName != "Example Shop" || len(c.Origins) != 3 || c.UserVerification != "required" ||
		time.Duration(c.Timeout) != 2*time.Minute || c.MaxPerUser != 3 {
		t.Fatalf("passkeys: %+v", c)
	}
}

// TestAdaptPasskeyErrors: `caddy adapt` fails for every bad value SPEC
// lists, naming the line and the value.
func TestAdaptPasskeyErrors(t *testing.T) {
	for _, tc := range []struct{ name, block, value string }{
		{"rp_id a URL", "rp_id https://example.com", "https://example.com"},
		{"rp_id with a port", "rp_id example.com:443", "example.com:443"},
		{"rp_id with a path", "rp_id example.com/login", "example.com/login"},
		{"rp_id an IP", "rp_id 192.0.2.1", "192.0.2.1"},
		{"rp_id an IPv6", "rp_id ::1", "::1"},
		{"origin elsewhere", "rp_id example.com\n\t\t\torigins https://example.org", "https://example.org"},
		{"origin a lookalike", "rp_id example.com\n\t\t\torigins https://badexample.com", "https://badexample.com"},
		{"origin http", "rp_id example.com\n\t\t\torigins http://example.com", "http://example.com"},
		{"origin with a path", "rp_id example.com\n\t\t\torigins https://example.com/app", "https://example.com/app"},
		{"origin another scheme", "rp_id example.com\n\t\t\torigins ftp://example.com", "ftp://example.com"},
		{"unknown user_verification", "rp_id example.com\n\t\t\tuser_verification always", "always"},
		{"timeout too long", "rp_id example.com\n\t\t\ttimeout 11m", "11m"},
		{"timeout too short", "rp_id example.com\n\t\t\ttimeout 500ms", "500ms"},
		{"max_per_user zero", "rp_id example.com\n\t\t\tmax_per_user 0", "0"},
		{"unknown option", "rp_id example.com\n\t\t\trp_icon x.png", "rp_icon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := "example.com {\n\tpasswordless {\n\t\tpasskeys {\n\t\t\t" + tc.block + "\n\t\t}\n\t}\n}\n"
			line := 4 + strings.Count(tc.block, "\n")
			_, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
			if err == nil || !strings.Contains(err.Error(), "Caddyfile:"+itoa(line)) || !strings.Contains(err.Error(), tc.value) {
				t.Fatalf("adapt error %v, want one naming Caddyfile:%d and %q", err, line, tc.value)
			}
		})
	}
	// rp_id is required; http is fine on localhost.
	_, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte("example.com {\n\tpasswordless {\n\t\tpasskeys {\n\t\t\trp_name x\n\t\t}\n\t}\n}\n"), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), "rp_id is required") {
		t.Fatalf("no rp_id: %v", err)
	}
	_, _, err = caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte("example.com {\n\tpasswordless {\n\t\tpasskeys {\n\t\t\trp_id localhost\n\t\t\torigins http://localhost:8080\n\t\t}\n\t}\n}\n"), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("localhost over http: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestProvisionPasskeyErrors: values that come from placeholders are
// checked when they are known.
func TestProvisionPasskeyErrors(t *testing.T) {
	t.Setenv("PWL_RP_ID", "https://example.com")
	t.Setenv("PWL_ORIGIN", "https://example.net")
	for _, tc := range []struct{ name, block, want string }{
		{"rp_id from env", "rp_id {env.PWL_RP_ID}", "not a URL"},
		{"origin from env", "rp_id example.com\n origins {env.PWL_ORIGIN}", "not on example.com"},
		{"only an app", "rp_id example.com\n origins android:apk-key-hash:abc", "at least one web origin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Passwordless
			if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("passwordless {\n passkeys {\n " + tc.block + "\n }\n}")); err != nil {
				t.Fatal(err)
			}
			expectProvisionError(t, &p, tc.want)
		})
	}
}

// TestRealmHasOneRPID: two handlers of one configuration that share a
// store and realm must agree on rp_id; in different realms they need not.
func TestRealmHasOneRPID(t *testing.T) {
	db := t.TempDir() + "/p.db"
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	provision := func(prefix, block string) error {
		var p Passwordless
		if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("passwordless {\n prefix " + prefix + "\n " + block + "\n}")); err != nil {
			t.Fatal(err)
		}
		p.Storage = &StorageConfig{Driver: "sqlite", DSN: db}
		err := p.Provision(ctx)
		t.Cleanup(func() { p.Cleanup() })
		return err
	}
	if err := provision("/a", "passkeys {\n rp_id example.com\n }"); err != nil {
		t.Fatal(err)
	}
	if err := provision("/b", "passkeys {\n rp_id example.com\n }"); err != nil {
		t.Fatalf("the same rp_id again: %v", err)
	}
	if err := provision("/c", "passkeys {\n rp_id other.example\n }\n realm other"); err != nil {
		t.Fatalf("another rp_id in another realm: %v", err)
	}
	err := provision("/d", "passkeys {\n rp_id example.org\n }")
	if err == nil || !strings.Contains(err.Error(), "rp_id example.com (prefix /a)") || !strings.Contains(err.Error(), "rp_id example.org (prefix /d)") {
		t.Fatalf("two rp_ids in one realm: %v", err)
	}
}
