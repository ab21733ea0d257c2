package passwordless

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
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
