// Command benchtable turns `go test -bench` output of the benchmarks module
// into the table `make bench` prints and the throughput chart it writes.
//
// Usage:
//
//	benchtable machine
//	benchtable table [-contenders list.tsv] [-svg chart.svg] bench.txt...
//
// machine prints one line: CPU model, cores, cache line, GOARCH, Go version.
// table reads benchmark lines named Benchmark<Group>/scenario=S/lib=L (as
// benchmarks/harness_test.go names them), takes the median of every metric
// over the -count runs, and prints per scenario: ns/item, items/s, allocs per
// item, the ratio of items/s to the best peer (every lib not named vinequeue*)
// and the run-to-run spread. Contenders the list marks absent get a row that
// says so. The caveats from the list are printed under the table.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/klauspost/cpuid/v2"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "machine":
		fmt.Println(machineLine())
	case "table":
		if err := tableCmd(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "benchtable:", err)
			os.Exit(1)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchtable machine | benchtable table [-contenders f.tsv] [-svg out.svg] bench.txt...")
	os.Exit(2)
}

// machineLine describes the host the numbers come from.
func machineLine() string {
	c := cpuid.CPU
	return fmt.Sprintf("machine: %s; %d physical cores, %d logical, GOMAXPROCS %d; cache line %d B; %s/%s; %s",
		strings.TrimSpace(c.BrandName), c.PhysicalCores, c.LogicalCores, runtime.GOMAXPROCS(0),
		c.CacheLine, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func tableCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("table", flag.ContinueOnError)
	listPath := fs.String("contenders", "", "contender list (kind, name, absent reason, caveat; tab-separated)")
	svgPath := fs.String("svg", "", "write the throughput-vs-producers chart here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var list []contenderInfo
	if *listPath != "" {
		f, err := os.Open(*listPath)
		if err != nil {
			return err
		}
		list, err = parseContenders(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", *listPath, err)
		}
	}
	res := newResults()
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = res.parse(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if len(res.order) == 0 {
		return fmt.Errorf("no benchmark lines named .../scenario=S/lib=L in %v", fs.Args())
	}
	writeTable(out, res, list)
	if *svgPath != "" {
		f, err := os.Create(*svgPath)
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		writeChart(w, res, machineLine())
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(out, "\nchart: %s\n", *svgPath)
	}
	return nil
}
