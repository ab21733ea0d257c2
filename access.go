package passwordless

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// defaultRealm is the realm of blocks that name none, and of every user
// that existed before realms did.
const defaultRealm = "default"

var realmName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// realmKey scopes a key of codes, limits, failures or secrets to a realm.
// The default realm keeps the bare key, so what was stored before realms
// existed stays valid; other realms' keys start with "realm:", which no
// bare key does.
func realmKey(realm, key string) string {
	if realm == defaultRealm || realm == "" {
		return key
	}
	return "realm:" + realm + "/" + key
}

// roleName is what a role may be called: it travels in a comma-separated
// header and is stored comma-separated.
var roleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

// normalizeRoles checks role names and returns them sorted, without
// duplicates.
func normalizeRoles(roles []string) ([]string, error) {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		if !roleName.MatchString(r) {
			return nil, fmt.Errorf("%q is not a role name (letters, digits, and _ . : - inside)", r)
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func joinRoles(roles []string) string { return strings.Join(roles, ",") }

func splitRoles(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
