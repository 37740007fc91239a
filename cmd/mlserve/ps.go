package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// psStatus is what `mlserve ps` reads from a server: /health/ready's body
// and a few figures of /metrics.
type psStatus struct {
	URL      string    `json:"url"`
	Status   string    `json:"status"`
	Reason   string    `json:"reason,omitempty"`
	Workers  int       `json:"workers"`
	Busy     int       `json:"busy"`
	Queued   int       `json:"queued"`
	MaxQueue int       `json:"maxQueue"`
	Models   []psModel `json:"models"`
	// Devices are where models are placed (GPUs; the CPU).
	Devices []psDevice `json:"devices,omitempty"`
	// Memory of the server process, from /metrics (0 when unknown).
	RSSBytes   int64  `json:"rssBytes,omitempty"`
	CHeapBytes int64  `json:"cHeapBytes,omitempty"`
	Version    string `json:"version,omitempty"`
}

type psModel struct {
	Task        string `json:"task"`
	Type        string `json:"type"`
	Model       string `json:"model"`
	Provider    string `json:"provider,omitempty"`
	Device      string `json:"device,omitempty"`
	InUse       int    `json:"inUse"`
	Preloaded   bool   `json:"preloaded"`
	IdleSeconds int    `json:"idleSeconds"`
	// Replicas are where each copy of the model runs (a busy model has
	// one per device with room for it).
	Replicas []psReplica `json:"replicas,omitempty"`
	// Fallback is set when the model runs on the CPU because its device
	// failed (MLSERVE_ALLOW_CPU_FALLBACK).
	Fallback *psFallback `json:"fallback,omitempty"`
}

type psReplica struct {
	Provider string `json:"provider"`
	Device   string `json:"device"`
	Fallback bool   `json:"fallback,omitempty"`
}

type psFallback struct {
	From   string `json:"from"`
	Reason string `json:"reason"`
}

type psDevice struct {
	Name         string `json:"name"`
	Provider     string `json:"provider"`
	Models       int    `json:"models"`
	Total        int64  `json:"memoryTotalBytes,omitempty"`
	Free         int64  `json:"memoryFreeBytes,omitempty"`
	ModelMemory  int64  `json:"modelMemoryBytes,omitempty"`
	Runs         int    `json:"runs"`
	Slots        int    `json:"slots"`
	OutOfMemory  int64  `json:"outOfMemory"`
	CPUFallbacks int64  `json:"cpuFallbacks"`
}

// psCommand is `mlserve ps`.
func (a *app) psCommand() *cobra.Command {
	var (
		base   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "Show what a running server has loaded",
		Long: `Asks a running mlserve (--url, default http://127.0.0.1:3003) for its loaded
models (task, type, execution provider, the device of each replica, a
model moved to the CPU because its GPU failed, requests using it, idle
time), its devices (models, memory, out-of-memory errors, CPU fallbacks),
its workers and queue (/health/ready) and its memory (/metrics:
resident set, C heap of ONNX Runtime and OpenCV). With MLSERVE_API_KEY set,
it is sent as the Bearer token (needed for /metrics with
MLSERVE_METRICS_PRIVATE).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := url.Parse(base)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usagef("--url %q: want http(s)://host:port", base)
			}
			cfg, _, err := a.setup(true)
			if err != nil {
				return err
			}
			st, err := fetchStatus(cmd.Context(), strings.TrimRight(base, "/"), cfg.APIKey)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, st)
			}
			printStatus(a.stdout, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&base, "url", "http://127.0.0.1:3003", "the server's base URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// psTimeout bounds each request to the server.
const psTimeout = 10 * time.Second

func fetchStatus(ctx context.Context, base, apiKey string) (psStatus, error) {
	st := psStatus{URL: base}
	client := &http.Client{Timeout: psTimeout}
	get := func(path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return nil, err
		}
		if apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
		return client.Do(req)
	}
	resp, err := get("/health/ready")
	if err != nil {
		return st, fmt.Errorf("no mlserve answers at %s (start one with `mlserve serve`, or give --url): %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return st, fmt.Errorf("%s/health/ready: HTTP %d (is this mlserve?)", base, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("%s/health/ready: %w", base, err)
	}
	st.URL = base
	// Memory and version are extras: a server whose /metrics is private
	// (and no key given) still shows its models.
	if resp, err := get("/metrics"); err == nil {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			readMetrics(resp.Body, &st)
		}
	}
	return st, nil
}

// readMetrics picks the figures ps shows from Prometheus's text format.
func readMetrics(r io.Reader, st *psStatus) {
	sc := bufio.NewScanner(io.LimitReader(r, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		value := func() int64 { f, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64); return int64(f) }
		switch {
		case name == "process_resident_memory_bytes":
			st.RSSBytes = value()
		case name == "mlserve_c_heap_bytes":
			st.CHeapBytes = value()
		case strings.HasPrefix(name, "mlserve_build_info{"):
			labels := strings.TrimSuffix(strings.TrimPrefix(name, "mlserve_build_info{"), "}")
			for _, kv := range strings.Split(labels, ",") {
				if v, ok := strings.CutPrefix(kv, `version="`); ok {
					st.Version = strings.TrimSuffix(v, `"`)
				}
			}
		}
	}
}

func printStatus(w io.Writer, st psStatus) {
	head := fmt.Sprintf("%s: %s", st.URL, st.Status)
	if st.Version != "" {
		head = fmt.Sprintf("%s: mlserve %s, %s", st.URL, st.Version, st.Status)
	}
	if st.Reason != "" {
		head += " (" + st.Reason + ")"
	}
	fmt.Fprintf(w, "%s; workers %d/%d busy, %d queued (at most %d)", head, st.Busy, st.Workers, st.Queued, st.MaxQueue)
	if st.RSSBytes > 0 {
		fmt.Fprintf(w, "; memory %s resident", size(st.RSSBytes))
		if st.CHeapBytes > 0 {
			fmt.Fprintf(w, ", %s C heap", size(st.CHeapBytes))
		}
	}
	fmt.Fprintln(w)
	printDevices(w, st.Devices)
	if len(st.Models) == 0 {
		fmt.Fprintln(w, "no models loaded")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tTASK\tTYPE\tPROVIDER\tDEVICE\tIN USE\tIDLE\tPRELOADED")
	var notes []string
	for _, m := range st.Models {
		pre := "no"
		if m.Preloaded {
			pre = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", m.Model, m.Task, m.Type, dash(m.Provider), dash(modelDevices(m)),
			m.InUse, time.Duration(m.IdleSeconds)*time.Second, pre)
		if m.Fallback != nil {
			notes = append(notes, fmt.Sprintf("%s/%s %s runs on the CPU: %s", m.Task, m.Type, m.Model, m.Fallback.Reason))
		}
	}
	_ = tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// modelDevices is a model's DEVICE column: each replica's device,
// "+"-joined, and "CPU (fallback from CUDA:0)" for a model that moved to
// the CPU.
func modelDevices(m psModel) string {
	if m.Fallback != nil {
		return "CPU (fallback from " + dash(m.Fallback.From) + ")"
	}
	if len(m.Replicas) == 0 {
		return m.Device
	}
	names := make([]string, len(m.Replicas))
	for i, r := range m.Replicas {
		names[i] = r.Device
	}
	return strings.Join(names, "+")
}

// printDevices writes one line per device: its models, memory, and the
// out-of-memory errors and CPU fallbacks seen there.
func printDevices(w io.Writer, devs []psDevice) {
	for _, d := range devs {
		models := "models"
		if d.Models == 1 {
			models = "model"
		}
		line := fmt.Sprintf("device %s (%s): %d %s", d.Name, d.Provider, d.Models, models)
		if d.Total > 0 {
			line += fmt.Sprintf(", %s free of %s", size(d.Free), size(d.Total))
		}
		if d.ModelMemory > 0 {
			line += fmt.Sprintf(", models took %s", size(d.ModelMemory))
		}
		line += fmt.Sprintf(", runs %d/%d", d.Runs, d.Slots)
		if d.OutOfMemory > 0 || d.CPUFallbacks > 0 {
			line += fmt.Sprintf(", %d out of memory, %d moved to the CPU", d.OutOfMemory, d.CPUFallbacks)
		}
		fmt.Fprintln(w, line)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
