// Command fixedload sends exactly n GET requests to one URL over c
// keep-alive connections, with one extra header, and fails if any answer
// is not 2xx or 3xx. bench/load.sh uses it where a fixed amount of work
// matters more than a fixed time: counting the instructions Caddy spends
// per request under callgrind.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "the URL to GET")
	n := flag.Int("n", 1000, "requests in all")
	c := flag.Int("c", 4, "connections (one client each)")
	header := flag.String("H", "", `one request header, "Name: value"`)
	flag.Parse()
	name, value, ok := strings.Cut(*header, ":")
	if *url == "" || *n < 1 || *c < 1 || (*header != "" && !ok) {
		fmt.Fprintln(os.Stderr, `usage: fixedload -url URL -n N -c C [-H "Name: value"]`)
		os.Exit(2)
	}
	client := &http.Client{
		Timeout:   2 * time.Minute, // Caddy under callgrind is slow
		Transport: &http.Transport{MaxIdleConnsPerHost: *c, DisableCompression: true},
		// A redirect is an answer like any other here.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	for range *c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*n) {
				req, _ := http.NewRequest(http.MethodGet, *url, nil)
				if *header != "" {
					req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
				}
				resp, err := client.Do(req)
				if err != nil {
					fmt.Fprintln(os.Stderr, "fixedload:", err)
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 400 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if b := bad.Load(); b > 0 {
		fmt.Fprintf(os.Stderr, "fixedload: %d of %d requests failed\n", b, *n)
		os.Exit(1)
	}
}
