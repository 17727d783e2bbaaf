// Command fixedbody serves fixed bytes as /metrics: the ceiling a plain Go
// HTTP server reaches on this machine, for scripts/bench to compare
// against. It answers what the exporter answered to the same request: the
// body of FILE as Content-Type TYPE, and, when given and the request takes
// gzip, the gzip body of GZFILE.
package main

import (
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) != 4 && len(os.Args) != 5 {
		log.Fatal("usage: fixedbody ADDRESS TYPE FILE [GZFILE]")
	}
	contentType := os.Args[2]
	plain := read(os.Args[3])
	var gz []byte
	if len(os.Args) == 5 {
		gz = read(os.Args[4])
	}
	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		body := plain
		if gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			h.Set("Content-Encoding", "gzip")
			body = gz
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}

func read(name string) []byte {
	b, err := os.ReadFile(name)
	if err != nil {
		log.Fatal(err)
	}
	return b
}
