package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run parses args, starts the gateway and serves until ctx ends (a signal),
// then drains; with -load it sends the events, reports, and drains.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg     config
		brokers string
		load    int
		keys    int
	)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "HTTP listen address")
	fs.StringVar(&brokers, "brokers", "", "Kafka seed brokers, comma-separated (default: an in-process broker)")
	fs.StringVar(&cfg.Topic, "topic", "events", "Kafka topic")
	fs.IntVar(&cfg.Partitions, "partitions", 3, "partitions of the topic on the in-process broker")
	fs.StringVar(&cfg.WALDir, "wal", filepath.Join(os.TempDir(), "vinequeue-gateway-wal"), "WAL directory (one gateway per directory)")
	fs.BoolVar(&cfg.Sync, "sync", false, "WAL Sync mode: a 202 means the event is on disk (default Periodic)")
	fs.DurationVar(&cfg.SyncInterval, "sync-interval", time.Second, "Periodic mode: the checkpoint period, the bound on what a crash loses")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "deadline of the drain into Kafka at shutdown")
	fs.IntVar(&load, "load", 0, "post this many events to the gateway, read the topic back, print both counts, and exit")
	fs.IntVar(&keys, "load-keys", 16, "distinct keys of the -load events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Brokers = splitBrokers(brokers)
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	g, err := start(cfg)
	if err != nil {
		return err
	}
	broker := "in-process broker " + fmt.Sprint(g.brokers)
	if g.cluster == nil {
		broker = fmt.Sprint("brokers ", g.brokers)
	}
	fmt.Fprintf(stdout, "gateway on %s, topic %q on %s, WAL %s\n", g.URL(), cfg.Topic, broker, cfg.WALDir)

	var loadErr error
	if load > 0 {
		var res loadResult
		res, loadErr = runLoad(ctx, g, load, keys)
		fmt.Fprintln(stdout, res)
	} else {
		<-ctx.Done()
		fmt.Fprintln(stdout, "gateway: draining")
	}
	dctx, cancel := context.WithTimeout(context.Background(), cfg.Drain)
	defer cancel()
	if err := g.shutdown(dctx); err != nil {
		return err
	}
	return loadErr
}
