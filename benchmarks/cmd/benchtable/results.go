package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// contenderInfo is one line of the list the benchmark binary prints with
// VINEBENCH_LIST=1: kind (queue|wal), name, absent reason, caveat.
type contenderInfo struct {
	kind, name, absent, caveat string
}

func parseContenders(r io.Reader) ([]contenderInfo, error) {
	var out []contenderInfo
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("contender line %q: want 4 tab-separated fields", line)
		}
		out = append(out, contenderInfo{kind: f[0], name: f[1], absent: f[2], caveat: f[3]})
	}
	return out, sc.Err()
}

// key identifies one cell group: a scenario of a benchmark group and a lib.
type key struct {
	group, scenario, lib string
}

// results holds every sample of every metric, in first-seen order.
type results struct {
	samples map[key]map[string][]float64 // unit → one value per run
	order   []key
	procs   int // GOMAXPROCS suffix of the benchmark names, 1 when absent
}

func newResults() *results {
	return &results{samples: map[key]map[string][]float64{}, procs: 1}
}

// parse reads `go test -bench` output; lines that are not results are skipped.
func (r *results) parse(rd io.Reader) error {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // a name printed alone (-v) or a log line
		}
		k, procs, ok := splitName(f[0])
		if !ok {
			continue
		}
		r.procs = procs
		m := r.samples[k]
		if m == nil {
			m = map[string][]float64{}
			r.samples[k] = m
			r.order = append(r.order, k)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return fmt.Errorf("line %q: value %q: %w", sc.Text(), f[i], err)
			}
			m[f[i+1]] = append(m[f[i+1]], v)
		}
	}
	return sc.Err()
}

// splitName splits "BenchmarkQueue/scenario=1p/lib=chan-2" into its key and
// the GOMAXPROCS suffix.
func splitName(name string) (key, int, bool) {
	procs := 1
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if n, err := strconv.Atoi(name[i+1:]); err == nil {
			procs = n
			name = name[:i]
		}
	}
	parts := strings.Split(strings.TrimPrefix(name, "Benchmark"), "/")
	var k key
	k.group = parts[0]
	for _, p := range parts[1:] {
		switch {
		case strings.HasPrefix(p, "scenario="):
			k.scenario = strings.TrimPrefix(p, "scenario=")
		case strings.HasPrefix(p, "lib="):
			k.lib = strings.TrimPrefix(p, "lib=")
		}
	}
	return k, procs, k.scenario != "" && k.lib != ""
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is the larger distance from the median to an extreme, as a fraction
// of the median: a plain run-to-run variation figure (benchstat prints the
// confidence interval beside it). With 5 runs or more the fastest and the
// slowest run are left out first, so that one run hit by a burst of
// background load does not set the figure alone.
func spread(xs []float64) float64 {
	m := median(xs)
	if len(xs) < 2 || m == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) >= 5 {
		s = s[1 : len(s)-1]
	}
	return math.Max(s[len(s)-1]-m, m-s[0]) / m
}

// value is the median of unit for k, and whether it was measured.
func (r *results) value(k key, unit string) (float64, bool) {
	xs := r.samples[k][unit]
	if len(xs) == 0 {
		return 0, false
	}
	return median(xs), true
}

// throughput is items/s, derived from ns/item when items/s was not reported.
func (r *results) throughput(k key) (float64, bool) {
	if v, ok := r.value(k, "items/s"); ok {
		return v, true
	}
	if ns, ok := r.nsPerItem(k); ok && ns > 0 {
		return 1e9 / ns, true
	}
	return 0, false
}

func (r *results) nsPerItem(k key) (float64, bool) {
	if v, ok := r.value(k, "ns/item"); ok {
		return v, true
	}
	return r.value(k, "ns/op")
}

func isOurs(lib string) bool { return strings.HasPrefix(lib, "vinequeue") }

// scenarioID groups keys by benchmark group and scenario, in first-seen order.
type scenarioID struct{ group, scenario string }

func (r *results) scenarios() []scenarioID {
	var out []scenarioID
	seen := map[scenarioID]bool{}
	for _, k := range r.order {
		id := scenarioID{k.group, k.scenario}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func (r *results) libs(id scenarioID) []string {
	var out []string
	for _, k := range r.order {
		if k.group == id.group && k.scenario == id.scenario {
			out = append(out, k.lib)
		}
	}
	return out
}

// bestPeer is the lib with the highest items/s in the scenario, ours excluded.
func (r *results) bestPeer(id scenarioID) (string, float64) {
	best, bestV := "", 0.0
	for _, lib := range r.libs(id) {
		if isOurs(lib) {
			continue
		}
		if v, ok := r.throughput(key{id.group, id.scenario, lib}); ok && v > bestV {
			best, bestV = lib, v
		}
	}
	return best, bestV
}

// kindOf maps a benchmark group to the contender list's kind.
func kindOf(group string) string {
	switch group {
	case "Queue":
		return "queue"
	case "Recovery":
		return "recovery"
	case "Sink":
		return "sink"
	}
	return "wal"
}

func writeTable(out io.Writer, r *results, list []contenderInfo) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tlib\tns/item\titems/s\tMB/s\tp99 append\tallocs/item\tvs best peer\tspread\t")
	for _, id := range r.scenarios() {
		bestLib, bestV := r.bestPeer(id)
		for _, lib := range r.libs(id) {
			k := key{id.group, id.scenario, lib}
			ns, _ := r.nsPerItem(k)
			tp, _ := r.throughput(k)
			allocs, ok := r.value(k, "allocs/item")
			if !ok {
				allocs, ok = r.value(k, "allocs/op")
			}
			allocStr := fmt.Sprintf("%.3f", allocs)
			if !ok || id.group == "Sink" { // a simulation's allocations say nothing per item
				allocStr = "-"
			}
			ratio := "-"
			if bestV > 0 {
				ratio = fmt.Sprintf("×%.2f", tp/bestV)
				if lib == bestLib {
					ratio += " (best peer)"
				}
			}
			sp := r.samples[k]["ns/item"]
			if len(sp) == 0 {
				sp = r.samples[k]["ns/op"]
			}
			note := ""
			if d, ok := r.value(k, "dropped/item"); ok && d > 0 {
				note = fmt.Sprintf(" dropped %.1f%%", 100*d)
			}
			mbs := "-"
			if v, ok := r.value(k, "MB/s"); ok {
				mbs = fmtMBs(v)
			}
			p99 := "-"
			if v, ok := r.value(k, "p99-µs"); ok {
				p99 = fmtNs(v * 1e3)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t±%.0f%%%s\t\n",
				id.scenario, lib, fmtNs(ns), fmtRate(tp), mbs, p99, allocStr, ratio, 100*spread(sp), note)
		}
		for _, c := range list {
			if c.absent != "" && c.kind == kindOf(id.group) {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", id.scenario, c.name, "absent", "-", "-", "-", "-", "-", "-")
			}
		}
	}
	tw.Flush()

	fmt.Fprintf(out, "\nmedian of %s runs per cell; spread = largest distance of a run from the median "+
		"(the fastest and the slowest run left out when there are 5 or more); "+
		"vs best peer = items/s ÷ items/s of the fastest non-vinequeue lib in that scenario.\n", runsLabel(r))
	for _, id := range r.scenarios() {
		if id.group == "Sink" {
			fmt.Fprintln(out, "sink-* rows: simulated time on internal/sinkmodel (Kafka-like sink: 2 ms/call, 1 µs/item, "+
				"×11 per item past a 2000-item knee; sink-change drops the knee to 500 at 10 s and measures after it): "+
				"items/s are simulated, the peers are fixed batch sizes, fixed-best is the swept optimum (an oracle).")
			break
		}
	}
	if len(list) > 0 {
		fmt.Fprintln(out, "\nabsent and caveats (the comparison is uneven where noted):")
		for _, c := range list {
			switch {
			case c.absent != "":
				fmt.Fprintf(out, "  %-14s ABSENT [%s]: %s\n", c.name, c.kind, c.absent)
			case c.caveat != "":
				fmt.Fprintf(out, "  %-14s %s [%s]\n", c.name, c.caveat, c.kind)
			}
		}
	}
}

func runsLabel(r *results) string {
	lo, hi := math.MaxInt, 0
	for _, m := range r.samples {
		for _, xs := range m {
			lo, hi = min(lo, len(xs)), max(hi, len(xs))
		}
	}
	if lo == hi {
		return strconv.Itoa(lo)
	}
	return fmt.Sprintf("%d–%d", lo, hi)
}

func fmtNs(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2fms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.2fµs", ns/1e3)
	case ns >= 100:
		return fmt.Sprintf("%.0fns", ns)
	default:
		return fmt.Sprintf("%.2fns", ns)
	}
}

func fmtRate(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func fmtMBs(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}
