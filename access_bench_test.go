package passwordless

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// BenchmarkCodeRequestOutsider compares a code request for an alias the
// allow list refuses with one for an unknown alias with registration
// closed: the same work, so the same time (no timing oracle).
func BenchmarkCodeRequestOutsider(b *testing.B) {
	for name, domain := range map[string]string{"unknown": "example.com", "not-allowed": "other.test"} {
		b.Run(name, func(b *testing.B) {
			p := benchHandler(b, "register_new_users false\nallow *@example.com")
			i := 0
			for b.Loop() {
				i++
				if w := benchPost(b, p, "/auth/email", url.Values{"email": {fmt.Sprintf("u%d@%s", i, domain)}}); w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkAllowCheck100k checks aliases against an allow file of 100,000
// lines, as a code request, a refresh or a protected route does: one on
// the list and one off it cost the same, well under 50 µs.
func BenchmarkAllowCheck100k(b *testing.B) {
	var file strings.Builder
	for i := range 100_000 {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&file, "person%d@example.com staff\n", i)
		case 1:
			fmt.Fprintf(&file, "*@dept%d.example.org\n", i)
		case 2:
			fmt.Fprintf(&file, "*@*.branch%d.example.net ops\n", i)
		default:
			fmt.Fprintf(&file, "+1555%07d\n", i)
		}
	}
	people := filepath.Join(b.TempDir(), "people.txt")
	if err := os.WriteFile(people, []byte(file.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	ac, err := newAccessControl(nil, people, nil, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer ac.close()
	for name, u := range map[string]User{
		"listed":    {Email: "person99996@example.com", Mobile: "+15550099999"},
		"domain":    {Email: "a@dept99997.example.org"},
		"subdomain": {Email: "a@x.branch99998.example.net"},
		"outsider":  {Email: "person99996@example.co", Mobile: "+15550099998"},
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if ac.admitsUser(u) != (name != "outsider") {
					b.Fatal("wrong answer")
				}
				ac.roles(u)
			}
		})
	}
}
