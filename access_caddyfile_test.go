package passwordless

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalAccess(t *testing.T) {
	var p Passwordless
	err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`passwordless {
		allow *@example.com alice@partner.org
		allow +44*
		allow_file /etc/caddy/people.txt
		protect /admin/* {
			role admin
		}
		protect /reports/* {
			role finance auditor
			email *@example.com
			mobile +1555*
		}
		protect /*
		realm main
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.Allow, " ") != "*@example.com alice@partner.org +44*" || p.AllowFile != "/etc/caddy/people.txt" || p.Realm != "main" {
		t.Fatalf("%+v", p)
	}
	got, _ := json.Marshal(p.ProtectRules)
	want := `[{"paths":["/admin/*"],"roles":["admin"]},{"paths":["/reports/*"],"roles":["finance","auditor"],"emails":["*@example.com"],"mobiles":["+1555*"]},{"paths":["/*"]}]`
	if string(got) != want || p.Protect != nil {
		t.Fatalf("rules %s, protect %v", got, p.Protect)
	}

	// Without conditions, protect lines stay plain paths, as before rules.
	var plain Passwordless
	if err := plain.UnmarshalCaddyfile(caddyfile.NewTestDispenser("passwordless {\n protect /a/*\n protect /b/* {\n }\n}")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(plain.Protect, " ") != "/a/* /b/*" || plain.ProtectRules != nil {
		t.Fatalf("protect %v rules %v", plain.Protect, plain.ProtectRules)
	}
}

func TestUnmarshalAccessErrors(t *testing.T) {
	expectCaddyfileErrors(t, []caddyfileError{
		{"allow without patterns", "passwordless {\n allow\n}", "wrong argument count"},
		{"bad allow pattern", "passwordless {\n allow *@\n}", "is not a pattern"},
		{"wildcard inside", "passwordless {\n allow a*@example.com\n}", "is not a pattern"},
		{"allow_file twice", "passwordless {\n allow_file a\n allow_file b\n}", "given twice"},
		{"allow_file two files", "passwordless {\n allow_file a b\n}", "wrong argument count"},
		{"bad realm", "passwordless {\n realm \"two words\"\n}", "realm"},
		{"unknown rule", "passwordless {\n protect /x {\n colour red\n }\n}", `unrecognized protect subdirective "colour"`},
		{"rule without values", "passwordless {\n protect /x {\n role\n }\n}", "wrong argument count"},
		{"bad role", "passwordless {\n protect /x {\n role a,b\n }\n}", "not a role name"},
		{"number as email", "passwordless {\n protect /x {\n email +44*\n }\n}", "other kind"},
		{"email as number", "passwordless {\n protect /x {\n mobile *@example.com\n }\n}", "other kind"},
		{"protect without paths", "passwordless {\n protect {\n role a\n }\n}", "wrong argument count"},
	})
}

// The line of a bad rule, through the whole adapter.
func TestAdaptAccessErrorNamesTheLine(t *testing.T) {
	input := "example.com {\n\tpasswordless {\n\t\tprotect /admin/* {\n\t\t\trole admin\n\t\t\temail nobody\n\t\t}\n\t}\n}\n"
	_, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:5") {
		t.Fatalf("adapt error %v, want one naming Caddyfile:5", err)
	}
}
