package pushpath

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// VictoriaMetrics is a single-node VictoriaMetrics started here.
type VictoriaMetrics struct {
	*Process
	URL string // http://HOST:PORT
}

// StartVictoriaMetrics starts bin with the flags of flagsFile (what users
// are told to run: examples/victoriametrics/flags), storing under dataDir,
// and extra flags last. Queries see samples a second after they arrive
// and may touch a few million series, as a fleet's checks do.
func StartVictoriaMetrics(bin, flagsFile, dataDir string, extra ...string) (*VictoriaMetrics, error) {
	flags, err := readFlags(flagsFile)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := append(flags, "-httpListenAddr="+addr, "-storageDataPath="+dataDir, "-loggerLevel=WARN",
		"-search.latencyOffset=1s", "-search.disableCache",
		"-search.maxUniqueTimeseries=10000000", "-search.maxSamplesPerQuery=1000000000", "-search.maxQueryDuration=10m")
	vm := &VictoriaMetrics{Process: newProcess(bin, nil, append(args, extra...)...), URL: "http://" + addr}
	if err := vm.start(vm.URL + "/health"); err != nil {
		return nil, err
	}
	return vm, nil
}

// Metrics is VictoriaMetrics' own /metrics, summed by name.
func (vm *VictoriaMetrics) Metrics(ctx context.Context) (map[string]float64, error) {
	return scrape(ctx, vm.URL+"/metrics")
}

// Series is one series of a query's result.
type Series struct {
	Labels map[string]string
	Value  float64
}

// Query runs an instant PromQL/MetricsQL query now.
func (vm *VictoriaMetrics) Query(ctx context.Context, q string) ([]Series, error) {
	var out struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := vm.getJSON(ctx, "/api/v1/query?query="+url.QueryEscape(q), &out); err != nil {
		return nil, err
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, out.Error)
	}
	ss := make([]Series, 0, len(out.Data.Result))
	for _, r := range out.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", q, r.Value[1], err)
		}
		ss = append(ss, Series{r.Metric, v})
	}
	return ss, nil
}

func (vm *VictoriaMetrics) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", vm.URL+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %s: %w", path, resp.Status, err)
	}
	return nil
}

// Raw is one series' raw samples, as stored: duplicates included.
type Raw struct {
	Metric     map[string]string
	Values     []float64
	Timestamps []int64 // milliseconds
}

// Export returns the raw samples of the series match selects between start and end.
func (vm *VictoriaMetrics) Export(ctx context.Context, match string, start, end time.Time) ([]Raw, error) {
	q := url.Values{"match[]": {match}, "start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)}}
	req, err := http.NewRequestWithContext(ctx, "GET", vm.URL+"/api/v1/export?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("export %s: %s", match, resp.Status)
	}
	var out []Raw
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 64<<20)
	for s.Scan() {
		var r Raw
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("export %s: %w", match, err)
		}
		out = append(out, r)
	}
	return out, s.Err()
}
