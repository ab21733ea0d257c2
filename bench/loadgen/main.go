// Command loadgen is the client of bench/logins.sh: a fixed amount of work
// (code requests for fresh addresses, then exchanges of those codes, then
// requests to the protected route with the tokens) spread over a number of
// concurrent clients, with each request's latency kept. It reads the codes
// from the log that Caddy's `log` sender writes.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	base := flag.String("base", "http://127.0.0.1:18090", "the site with the plugin")
	clients := flag.Int("clients", 8, "concurrent clients")
	n := flag.Int("n", 2000, "requests per phase")
	codes := flag.String("codes", "", "the JSON log the log sender writes codes to")
	tag := flag.String("tag", "run", "makes this run's addresses fresh")
	flag.IntVar(&caddyPID, "pid", 0, "Caddy's process id: report its CPU time per request")
	flag.Parse()
	if *codes == "" || *clients < 1 || *n < 1 {
		fmt.Fprintln(os.Stderr, "usage: loadgen -codes FILE [-base URL] [-clients N] [-n N] [-tag T]")
		os.Exit(2)
	}
	if err := run(*base, *clients, *n, *codes, *tag); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

var client *http.Client

// caddyPID, when set, is the process whose CPU time each phase reports.
var caddyPID int

// cpuTime is the user and system CPU time a process has used so far, from
// /proc (Linux); zero where it cannot be read.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func run(base string, clients, n int, codesLog, tag string) error {
	client = &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients},
	}
	aliases := make([]string, n)
	for i := range aliases {
		aliases[i] = fmt.Sprintf("%s-%d@bench.example.com", tag, i)
	}
	// Warm-up, not measured: every client opens its connection.
	phase(clients, clients*20, func(int) error {
		req, _ := http.NewRequest(http.MethodGet, base+"/auth/jwks.json", nil)
		return do(req, nil)
	})
	// Only codes logged from now on are this run's.
	var logStart int64
	if fi, err := os.Stat(codesLog); err == nil {
		logStart = fi.Size()
	}
	failed := 0
	res := phase(clients, n, func(i int) error {
		return post(base+"/auth/email", url.Values{"email": {aliases[i]}}, nil)
	})
	report("code requests", clients, res)
	failed += res.errors

	codes, err := readCodes(codesLog, logStart, aliases, 60*time.Second)
	if err != nil {
		return err
	}
	tokens := make([]string, n)
	res = phase(clients, n, func(i int) error {
		var body struct {
			Token string `json:"token"`
		}
		if err := post(base+"/auth/token", url.Values{"email": {aliases[i]}, "token": {codes[aliases[i]]}}, &body); err != nil {
			return err
		}
		tokens[i] = body.Token
		return nil
	})
	report("exchanges", clients, res)
	failed += res.errors

	res = phase(clients, n, func(i int) error {
		req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
		req.Header.Set("Authorization", "Bearer "+tokens[i])
		return do(req, nil)
	})
	report("protected route", clients, res)
	failed += res.errors
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	return nil
}

type result struct {
	latencies []time.Duration
	wall      time.Duration
	errors    int
	firstErr  error
	caddyCPU  time.Duration
}

// phase runs f(0..n-1) on clients goroutines that take the next index as
// they free up, and times each call.
func phase(clients, n int, f func(i int) error) result {
	var next atomic.Int64
	lat := make([]time.Duration, n)
	var mu sync.Mutex
	var res result
	var wg sync.WaitGroup
	var cpu0 time.Duration
	if caddyPID != 0 {
		cpu0 = cpuTime(caddyPID)
	}
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				err := f(i)
				lat[i] = time.Since(t)
				if err != nil {
					mu.Lock()
					res.errors++
					if res.firstErr == nil {
						res.firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	res.latencies = lat
	if caddyPID != 0 {
		res.caddyCPU = cpuTime(caddyPID) - cpu0
	}
	return res
}

func report(name string, clients int, r result) {
	slices.Sort(r.latencies)
	q := func(p float64) float64 {
		i := int(p*float64(len(r.latencies))+0.5) - 1
		i = min(max(i, 0), len(r.latencies)-1)
		return float64(r.latencies[i]) / float64(time.Millisecond)
	}
	cpu := ""
	if caddyPID != 0 {
		cpu = fmt.Sprintf("  caddy CPU %4.0f us/req", float64(r.caddyCPU/time.Microsecond)/float64(len(r.latencies)))
	}
	fmt.Printf("%-16s %3d clients  %7.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d%s\n",
		name, clients, float64(len(r.latencies))/r.wall.Seconds(), q(0.50), q(0.99), r.errors, cpu)
	if r.firstErr != nil {
		fmt.Printf("  first error: %v\n", r.firstErr)
	}
}

func post(u string, form url.Values, out any) error {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(req, out)
}

func do(req *http.Request, out any) error {
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, res.StatusCode, strings.TrimSpace(string(body)))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// readCodes waits until the log holds a code for every alias; the outbox
// workers write them shortly after the requests were answered.
func readCodes(path string, offset int64, aliases []string, timeout time.Duration) (map[string]string, error) {
	want := make(map[string]bool, len(aliases))
	for _, a := range aliases {
		want[a] = true
	}
	codes := map[string]string{}
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.Open(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if err == nil {
			f.Seek(offset, io.SeekStart)
			r := bufio.NewReader(f)
			for {
				line, err := r.ReadBytes('\n')
				if err != nil {
					break // a partial line is read again next time
				}
				offset += int64(len(line))
				var e struct {
					To   string `json:"to"`
					Code string `json:"code"`
				}
				if json.Unmarshal(line, &e) == nil && want[e.To] && e.Code != "" {
					codes[e.To] = e.Code
				}
			}
			f.Close()
		}
		if len(codes) == len(want) {
			return codes, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d codes reached the log within %s", len(codes), len(want), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
