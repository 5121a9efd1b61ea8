package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// chartScenarios are the in-memory scenarios plotted, in x order, with the
// producer count each stands for ("P" is GOMAXPROCS, read from the names).
var chartScenarios = []struct{ name, label string }{
	{"1p", "1"},
	{"Pp", "P"},
	{"64g", "64"},
	{"1024g", "1024"},
}

// palette gives each lib a distinct colour; ours is drawn first and thickest.
var palette = []string{"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"}

// writeChart draws throughput (items/s, log scale) against producers, one
// line per lib, as a self-contained SVG.
func writeChart(w io.Writer, r *results, subtitle string) {
	const (
		width, height       = 860, 520
		left, right, top    = 90, 190, 70
		bottom              = 70
		plotW, plotH        = width - left - right, height - top - bottom
		legendX, legendStep = width - right + 20, 22
	)
	type series struct {
		lib string
		pts []float64 // items/s per chartScenarios entry; NaN = not measured
	}
	var all []series
	seen := map[string]bool{}
	for _, k := range r.order {
		if k.group != "Queue" || seen[k.lib] {
			continue
		}
		seen[k.lib] = true
		s := series{lib: k.lib}
		for _, sc := range chartScenarios {
			v, ok := r.throughput(key{"Queue", sc.name, k.lib})
			if !ok || v <= 0 {
				v = math.NaN()
			}
			s.pts = append(s.pts, v)
		}
		all = append(all, s)
	}

	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range all {
		for _, v := range s.pts {
			if !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) { // nothing to plot
		lo, hi = 1e6, 1e9
	}
	ylo, yhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yhi == ylo {
		yhi++
	}
	yOf := func(v float64) float64 {
		return top + plotH - (math.Log10(v)-ylo)/(yhi-ylo)*plotH
	}
	xOf := func(i int) float64 {
		return left + float64(i)*plotW/float64(len(chartScenarios)-1)
	}

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="%d" y="28" font-size="17" font-weight="bold">Throughput vs producers (items/s, log scale; higher is better)</text>`+"\n", left)
	fmt.Fprintf(w, `<text x="%d" y="48" font-size="11" fill="#555">%s</text>`+"\n", left, html.EscapeString(subtitle))

	// Grid: decades and their 2× and 5× marks.
	for d := ylo; d <= yhi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > yhi+1e-9 {
				continue
			}
			y := yOf(v)
			stroke, dash := "#ccc", ` stroke-dasharray="3,3"`
			if m == 1 {
				stroke, dash = "#999", ""
			}
			fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"%s/>`+"\n", left, y, left+plotW, y, stroke, dash)
			fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" fill="#333">%s</text>`+"\n", left-8, y+4, fmtRate(v))
		}
	}
	for i, sc := range chartScenarios {
		x := xOf(i)
		label := sc.label
		if label == "P" {
			label = fmt.Sprintf("P=%d", r.procs)
		}
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x, top, x, top+plotH)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, top+plotH+20, label)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">producer goroutines (one consumer)</text>`+"\n", left+plotW/2, height-20)
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", left, top, plotW, plotH)

	for si, s := range all {
		color := palette[si%len(palette)]
		widthPx := 2.0
		if isOurs(s.lib) {
			widthPx = 3.5
		}
		var pts []string
		for i, v := range s.pts {
			if math.IsNaN(v) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(i), yOf(v)))
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s %s: %s items/s</title></circle>`+"\n",
				xOf(i), yOf(v), color, html.EscapeString(s.lib), chartScenarios[i].label, fmtRate(v))
		}
		if len(pts) > 1 {
			fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="%.1f"/>`+"\n", strings.Join(pts, " "), color, widthPx)
		}
		ly := top + 10 + si*legendStep
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="%.1f"/>`+"\n", legendX, ly, legendX+24, ly, color, widthPx)
		fmt.Fprintf(w, `<text x="%d" y="%d">%s</text>`+"\n", legendX+30, ly+4, html.EscapeString(s.lib))
	}
	fmt.Fprintln(w, `</svg>`)
}
