package passwordless

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestPasskeysCommand: the operator lists a user's passkeys, deletes one
// and then the rest, and `users show` counts them; unknown users and
// passkeys exit 1 with one line.
func TestPasskeysCommand(t *testing.T) {
	eachStore(t, func(t *testing.T, s cliStore) {
		ctx := context.Background()
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		u, err := s.CreateUser(ctx, defaultRealm, []Alias{{Kind: KindEmail, Value: "ada@example.com"}}, nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		for i, name := range []string{"Laptop", "Phone"} {
			pk := Passkey{Realm: defaultRealm, ID: []byte{'k', byte('1' + i)}, UserID: u.ID, PublicKey: []byte("cose"),
				AAGUID: make([]byte, 16), BackupEligible: i == 1, BackupState: i == 1, Name: name, CreatedAt: t0.Add(time.Duration(i) * time.Hour)}
			if err := s.AddPasskey(ctx, pk, 10); err != nil {
				t.Fatal(err)
			}
		}
		s.UsePasskey(ctx, defaultRealm, []byte("k2"), 0, true, true, t0.Add(2*time.Hour))
		c := &cli{t: t, config: cliSite(t, s.storage, "")}
		k1, k2 := base64.RawURLEncoding.EncodeToString([]byte("k1")), base64.RawURLEncoding.EncodeToString([]byte("k2"))

		out := c.ok("passkeys", "list", "ADA@example.com")
		expectContains(t, out, "ID", "NAME", "LAST USED", "BACKED UP", k1, "Laptop", "2026-03-01T12:00:00Z", k2, "Phone", "2026-03-01T14:00:00Z", "yes")
		var views []passkeyCLIView
		if err := json.Unmarshal([]byte(c.ok("passkeys", "list", u.ID, "--json")), &views); err != nil {
			t.Fatal(err)
		}
		if len(views) != 2 || views[0].ID != k1 || views[0].LastUsed != nil || views[0].BackedUp || views[1].Name != "Phone" || !views[1].BackedUp {
			t.Fatalf("passkeys list --json: %+v", views)
		}
		expectContains(t, c.ok("users", "show", "ada@example.com"), "passkeys:", "2")
		var shown userView
		json.Unmarshal([]byte(c.ok("users", "show", "ada@example.com", "--json")), &shown)
		if shown.Passkeys == nil || *shown.Passkeys != 2 {
			t.Fatalf("users show --json: %+v", shown)
		}

		expectContains(t, c.ok("passkeys", "delete", "ada@example.com", k1), "deleted 1 passkey of "+u.ID)
		if _, err := storeSQL(s).PasskeyByID(ctx, defaultRealm, []byte("k1")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the deleted passkey is still there: %v", err)
		}
		expectContains(t, c.fails("passkeys", "delete", "ada@example.com", k1), "no passkey "+k1)
		expectContains(t, c.fails("passkeys", "delete", "ada@example.com", "!!"), "no passkey !!")
		expectContains(t, c.fails("passkeys", "list", "nobody@example.com"), "no user with email nobody@example.com")
		expectContains(t, c.ok("passkeys", "delete", u.ID), "deleted 1 passkey of")
		if list, _ := s.Passkeys(ctx, u.ID); len(list) != 0 {
			t.Fatalf("passkeys left after deleting all: %+v", list)
		}
		if out := c.ok("users", "show", u.ID); !strings.Contains(out, "passkeys:") {
			t.Fatalf("users show: %s", out)
		}
	})
}
