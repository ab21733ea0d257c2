package passwordless

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// An aliasPattern says which aliases an allow line or a rule admits: an
// exact address or number, every address of one domain (`*@domain`) or of
// its subdomains (`*@*.domain`), or every number with a prefix (`+44*`).
type aliasPattern struct {
	kind   AliasKind
	exact  string
	domain string // *@domain
	sub    string // *@*.domain: ".domain"
	prefix string // +44*: "+44"
}

var numberPrefix = regexp.MustCompile(`^\+[1-9][0-9]{0,14}$`)

func parsePattern(s string) (aliasPattern, error) {
	bad := func() (aliasPattern, error) {
		return aliasPattern{}, fmt.Errorf("%q is not a pattern: use an address, *@domain, *@*.domain, a number like +15551234567 or a prefix like +44*", s)
	}
	domain := func(d string) (string, bool) {
		v, err := normalizeEmail("x@" + d)
		return strings.TrimPrefix(v, "x@"), err == nil
	}
	switch {
	case strings.HasPrefix(s, "*@*."):
		d, ok := domain(s[len("*@*."):])
		if !ok {
			return bad()
		}
		return aliasPattern{kind: KindEmail, sub: "." + d}, nil
	case strings.HasPrefix(s, "*@"):
		d, ok := domain(s[len("*@"):])
		if !ok {
			return bad()
		}
		return aliasPattern{kind: KindEmail, domain: d}, nil
	case strings.HasPrefix(s, "+") && strings.HasSuffix(s, "*"):
		if !numberPrefix.MatchString(s[:len(s)-1]) {
			return bad()
		}
		return aliasPattern{kind: KindMobile, prefix: s[:len(s)-1]}, nil
	case strings.Contains(s, "*"):
		return bad()
	case strings.Contains(s, "@"):
		v, err := normalizeEmail(s)
		if err != nil {
			return bad()
		}
		return aliasPattern{kind: KindEmail, exact: v}, nil
	default:
		// Exactly E.164 as written: a pattern is not what a person typed.
		if !e164.MatchString(s) {
			return bad()
		}
		return aliasPattern{kind: KindMobile, exact: s}, nil
	}
}

// match reports whether the normalised alias a fits the pattern.
func (pt aliasPattern) match(a Alias) bool {
	if a.Kind != pt.kind || a.Value == "" {
		return false
	}
	switch {
	case pt.exact != "":
		return a.Value == pt.exact
	case pt.prefix != "":
		return strings.HasPrefix(a.Value, pt.prefix)
	}
	d := a.Value[strings.LastIndexByte(a.Value, '@')+1:]
	if pt.domain != "" {
		return d == pt.domain
	}
	return strings.HasSuffix(d, pt.sub)
}

// allowLine is one line of the allow list: a pattern and the roles it
// gives.
type allowLine struct {
	pattern aliasPattern
	roles   []string
}

// parseAllowFile reads allow_file lines: `PATTERN [ROLE...]`, blank lines
// and `#` comments ignored. A comment starts at a `#` that begins the line
// or follows a space or tab, so an address may hold a `#`. A leading UTF-8
// byte order mark, which some editors write, is not part of the first line.
func parseAllowFile(name string, data []byte) ([]allowLine, error) {
	var out []allowLine
	text := strings.TrimPrefix(string(data), "\uFEFF")
	for i, line := range strings.Split(text, "\n") {
		line = stripComment(line)
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pt, err := parsePattern(fields[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, i+1, err)
		}
		roles, err := normalizeRoles(fields[1:])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, i+1, err)
		}
		out = append(out, allowLine{pattern: pt, roles: roles})
	}
	return out, nil
}

// stripComment cuts line at its first `#` that begins it or follows
// whitespace.
func stripComment(line string) string {
	for j := 0; j < len(line); j++ {
		if line[j] == '#' && (j == 0 || line[j-1] == ' ' || line[j-1] == '\t') {
			return line[:j]
		}
	}
	return line
}

// maxAllowFile bounds what is read of allow_file: a million lines of an
// ordinary length fit, and a path to an endless file (/dev/zero) cannot
// take the memory.
const maxAllowFile = 64 << 20

// readAllowFile reads the allow file if it is a regular file of at most
// maxAllowFile bytes. The open does not block, and the check is made on
// the opened file, not on the path: a FIFO renamed over the file would
// otherwise hold a reload, or the watcher, until someone wrote to it.
func readAllowFile(name string) ([]byte, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxAllowFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxAllowFile {
		return nil, fmt.Errorf("%s is larger than %d MiB", name, maxAllowFile>>20)
	}
	return data, nil
}

// allowFilePoll is how often allow_file is read again. With the session
// recheck it bounds how long a removed line keeps working.
const allowFilePoll = time.Second

// accessControl is who may sign in and what roles they hold, as the
// configuration and the allow file say now.
type accessControl struct {
	// restricted is false when neither allow nor allow_file is set:
	// anyone may sign in (as register_new_users says).
	restricted bool
	static     []allowLine
	demo       []Alias
	file       string
	index      atomic.Pointer[allowIndex] // static lines and the file's
	sum        [32]byte                   // of the file's last good version
	// gen counts allow file changes; cached user states computed under
	// an older one are computed again.
	gen    atomic.Uint64
	logger *zap.Logger
	stop   chan struct{}
	done   chan struct{}
}

// newAccessControl builds the allow list of a handler, or of the command
// line, which reads who may sign in as the handlers do; a broken
// allow_file fails here, naming the file and line.
func newAccessControl(allow []string, allowFile string, demo []DemoUser, logger *zap.Logger) (*accessControl, error) {
	ac := &accessControl{restricted: len(allow) > 0 || allowFile != "", file: allowFile, logger: logger}
	for _, s := range allow {
		pt, err := parsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("allow: %v", err)
		}
		ac.static = append(ac.static, allowLine{pattern: pt})
	}
	for _, d := range demo {
		if a, err := parseAlias(d.Alias); err == nil {
			ac.demo = append(ac.demo, a)
		}
	}
	ac.index.Store(newAllowIndex(ac.static, nil))
	if ac.file != "" {
		data, err := readAllowFile(ac.file)
		if err != nil {
			return nil, fmt.Errorf("allow_file: %w", err)
		}
		lines, err := parseAllowFile(ac.file, data)
		if err != nil {
			return nil, fmt.Errorf("allow_file: %w", err)
		}
		ac.index.Store(newAllowIndex(ac.static, lines))
		ac.sum = sha256.Sum256(data)
		ac.stop, ac.done = make(chan struct{}), make(chan struct{})
		go ac.watch()
	}
	return ac, nil
}

// watch reads the allow file again every allowFilePoll. A broken version
// is logged and the last good one stays.
func (ac *accessControl) watch() {
	defer close(ac.done)
	t := time.NewTicker(allowFilePoll)
	defer t.Stop()
	unreadable := false // logged once, not every poll
	for {
		select {
		case <-ac.stop:
			return
		case <-t.C:
		}
		data, err := readAllowFile(ac.file)
		if err != nil {
			if !unreadable {
				ac.logger.Error("reading allow_file; keeping its last good version", zap.String("file", ac.file), zap.Error(err))
			}
			unreadable = true
			continue
		}
		unreadable = false
		sum := sha256.Sum256(data)
		if sum == ac.sum {
			continue
		}
		ac.sum = sum
		lines, err := parseAllowFile(ac.file, data)
		if err != nil {
			ac.logger.Error("allow_file is broken; keeping its last good version", zap.Error(err))
			continue
		}
		ac.index.Store(newAllowIndex(ac.static, lines))
		ac.gen.Add(1)
		ac.logger.Info("allow_file reloaded", zap.String("file", ac.file), zap.Int("lines", len(lines)))
	}
}

func (ac *accessControl) close() {
	if ac != nil && ac.stop != nil {
		close(ac.stop)
		<-ac.done
	}
}

// admits reports whether a may sign in.
func (ac *accessControl) admits(a Alias) bool {
	if !ac.restricted || slices.Contains(ac.demo, a) {
		return true
	}
	ok, _ := ac.index.Load().lookup(a)
	return ok
}

// admitsUser reports whether one of u's aliases may sign in.
func (ac *accessControl) admitsUser(u User) bool {
	return ac.admits(Alias{Kind: KindEmail, Value: u.Email}) && u.Email != "" ||
		ac.admits(Alias{Kind: KindMobile, Value: u.Mobile}) && u.Mobile != ""
}

// roles are u's effective roles: those stored, and those of every allow
// line that matches one of its aliases. Sorted.
func (ac *accessControl) roles(u User) []string {
	ix := ac.index.Load()
	_, email := ix.lookup(Alias{Kind: KindEmail, Value: u.Email})
	_, mobile := ix.lookup(Alias{Kind: KindMobile, Value: u.Mobile})
	out := slices.Concat(u.Roles, email, mobile)
	slices.Sort(out)
	return slices.Compact(out)
}

// allowIndex is the allow list as maps from what a pattern names to the
// roles of its lines. Checking an alias is then a few lookups decided by
// the alias alone (its domain's labels, its number's length), the same
// whether it is admitted or not and however long the list: a scan of
// 100,000 lines stopped sooner for some aliases than for others, and so
// told who was on the list.
type allowIndex struct {
	exact  map[string][]string // Alias.Key()
	domain map[string][]string // *@domain: "domain"
	sub    map[string][]string // *@*.domain: ".domain"
	prefix map[string][]string // +44*: "+44"
}

func newAllowIndex(groups ...[]allowLine) *allowIndex {
	ix := &allowIndex{exact: map[string][]string{}, domain: map[string][]string{}, sub: map[string][]string{}, prefix: map[string][]string{}}
	add := func(m map[string][]string, k string, roles []string) {
		m[k] = append(m[k], roles...)
		if m[k] == nil {
			m[k] = []string{} // present: admits without roles
		}
	}
	for _, lines := range groups {
		for _, l := range lines {
			pt := l.pattern
			switch {
			case pt.exact != "":
				add(ix.exact, Alias{Kind: pt.kind, Value: pt.exact}.Key(), l.roles)
			case pt.prefix != "":
				add(ix.prefix, pt.prefix, l.roles)
			case pt.domain != "":
				add(ix.domain, pt.domain, l.roles)
			default:
				add(ix.sub, pt.sub, l.roles)
			}
		}
	}
	return ix
}

// lookup reports whether the normalised alias a fits a line, and the
// roles of every line it fits. It makes every lookup a's shape calls
// for, without stopping at the first that fits.
func (ix *allowIndex) lookup(a Alias) (ok bool, roles []string) {
	if a.Value == "" {
		return false, nil
	}
	find := func(m map[string][]string, k string) {
		if r, found := m[k]; found {
			ok = true
			roles = append(roles, r...)
		}
	}
	find(ix.exact, a.Key())
	switch a.Kind {
	case KindEmail:
		d := a.Value[strings.LastIndexByte(a.Value, '@')+1:]
		find(ix.domain, d)
		for i := 0; i < len(d); i++ {
			if d[i] == '.' {
				find(ix.sub, d[i:])
			}
		}
	case KindMobile:
		for i := 2; i <= len(a.Value); i++ {
			find(ix.prefix, a.Value[:i])
		}
	}
	return ok, roles
}

// Rules on who may open which paths.
