// Command gpucheck is the program behind scripts/gpu-check.sh: it checks a
// built mlserve binary on a GPU machine (or, for the dry run, on CPU) the
// way a remote GPU host for Immich is used, and writes one JSON summary.
//
//	gpucheck tokenizer -merges bpe_simple_vocab_16e6.txt -out DIR
//	gpucheck models -dir CACHE -tokenizer DIR [-full]
//	gpucheck run -mlserve BIN -models CACHE -tokenizer DIR -out FILE [-cuda] [-full] ...
//
// run starts `mlserve serve` on CPU and computes reference outputs for CLIP
// image and text requests and a face request (buffalo_l-shaped graphs
// made by modelgen), then starts it on the device (MLSERVE_PROVIDERS=CUDA
// with -cuda) and compares every embedding (cosine), checks the provider
// each response reports (X-Mlserve-Provider), measures throughput and
// latency with `mlserve bench` at concurrency 1, 8 and 32, and with -cuda
// reads GPU memory (nvidia-smi) with no model, loaded, after the idle TTL
// unloaded them, and around an out-of-memory forced by another process
// holding the GPU's free memory (PyTorch, from the machine's venv).
//
// It relies on these `mlserve bench` flags: --url, --task (clip-visual,
// faces), --clip-model, --face-model, --face-min-score, --image, --concurrency,
// --duration; and on the first row of its concurrency table (conc, img/s,
// p50, p95, p99, 503s, errors).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: gpucheck tokenizer|models|run [flags]")
		return 2
	}
	var err error
	switch args[0] {
	case "tokenizer":
		fs := flag.NewFlagSet("tokenizer", flag.ContinueOnError)
		merges := fs.String("merges", "", "OpenAI's bpe_simple_vocab_16e6.txt")
		out := fs.String("out", "", "folder for the tokenizer files")
		if err = fs.Parse(args[1:]); err == nil {
			err = writeTokenizer(*merges, *out)
		}
	case "models":
		fs := flag.NewFlagSet("models", flag.ContinueOnError)
		dir := fs.String("dir", "", "model cache to fill")
		tok := fs.String("tokenizer", "", "folder with the CLIP tokenizer files")
		full := fs.Bool("full", false, "real architectures (ViT-B/32, IResNet-50): hundreds of MB")
		if err = fs.Parse(args[1:]); err == nil {
			err = writeModels(*dir, *tok, *full)
		}
	case "run":
		var o checkOptions
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.StringVar(&o.MLServe, "mlserve", "", "mlserve binary")
		fs.StringVar(&o.Models, "models", "", "model cache (written if empty)")
		fs.StringVar(&o.Tokenizer, "tokenizer", "", "folder with the CLIP tokenizer files")
		fs.StringVar(&o.Out, "out", "", "JSON summary to write")
		fs.StringVar(&o.LogDir, "logs", "", "folder for the servers' logs (default: next to -out)")
		fs.BoolVar(&o.CUDA, "cuda", false, "compare against MLSERVE_PROVIDERS=CUDA and read GPU memory")
		fs.BoolVar(&o.Full, "full", false, "real architectures (ViT-B/32, IResNet-50)")
		fs.DurationVar(&o.BenchFor, "bench-duration", 10*time.Second, "duration of each `mlserve bench` run")
		fs.IntVar(&o.Port, "port", 3931, "first of the two loopback ports the servers use")
		fs.StringVar(&o.Python, "python", "python3", "Python with PyTorch, to force an out-of-memory (-cuda)")
		fs.DurationVar(&o.Budget, "budget", 270*time.Second, "stop optional steps when this much time has passed")
		if err = fs.Parse(args[1:]); err != nil {
			break
		}
		if o.MLServe == "" || o.Models == "" || o.Tokenizer == "" || o.Out == "" {
			err = errors.New("run needs -mlserve, -models, -tokenizer and -out")
			break
		}
		if o.LogDir == "" {
			o.LogDir = filepath.Dir(o.Out)
		}
		var s *summary
		s, err = check(ctx, o, stderr)
		if s != nil {
			b, jerr := json.MarshalIndent(s, "", "  ")
			if jerr != nil {
				return 1
			}
			if werr := os.WriteFile(o.Out, append(b, '\n'), 0o644); werr != nil {
				fmt.Fprintln(stderr, "gpucheck:", werr)
				return 1
			}
			fmt.Fprintf(stdout, "gpucheck: summary in %s\n", o.Out)
			if err == nil && !s.Passed {
				err = fmt.Errorf("checks failed: %v", s.Failed)
			}
		}
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "gpucheck:", err)
		return 1
	}
	return 0
}
