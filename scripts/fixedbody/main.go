// Command fixedbody serves fixed bytes as /metrics: the ceiling a Go HTTP
// server reaches on this machine, for scripts/bench to compare against. It
// answers what the exporter answered to the same request: the body of FILE
// as Content-Type TYPE, or, when given and the request takes gzip, the gzip
// body of GZFILE. Headers are built once, as fast as a handler can set them.
package main

import (
	"log"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) != 4 && len(os.Args) != 5 {
		log.Fatal("usage: fixedbody ADDRESS TYPE FILE [GZFILE]")
	}
	plain, plainHeader := read(os.Args[3]), http.Header{"Content-Type": {os.Args[2]}}
	plainHeader.Set("Content-Length", strconv.Itoa(len(plain)))
	gz, gzHeader := plain, plainHeader
	if len(os.Args) == 5 {
		gz, gzHeader = read(os.Args[4]), http.Header{"Content-Type": {os.Args[2]}, "Content-Encoding": {"gzip"}}
		gzHeader.Set("Content-Length", strconv.Itoa(len(gz)))
	}
	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			maps.Copy(w.Header(), gzHeader)
			w.Write(gz)
			return
		}
		maps.Copy(w.Header(), plainHeader)
		w.Write(plain)
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
