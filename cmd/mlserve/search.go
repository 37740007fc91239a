package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/search"
)

const searchUsage = `usage: mlserve search [flags] TEXT...
       mlserve search [flags] --image PATH

Finds the indexed images nearest to a text (CLIP's text encoder) or to an
example image (its image encoder), by cosine distance, nearest first: in our
own schema, or with --immich in an Immich database's smart_search.

flags:
`

func runSearch(ctx context.Context, args []string, stdout io.Writer, cfg *config.Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fs := flag.NewFlagSet("search", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, searchUsage); fs.PrintDefaults() }
	var (
		db     dbFlags
		limit  int
		image  string
		asJSON bool
	)
	db.register(fs)
	fs.IntVar(&limit, "limit", 20, fmt.Sprintf("number of results (1..%d)", search.MaxLimit))
	fs.StringVar(&image, "image", "", "search by this example image instead of a text")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	text := strings.TrimSpace(strings.Join(fs.Args(), " "))
	if (text == "") == (image == "") {
		fs.Usage()
		return errors.New("give a search text or --image (one of them)")
	}
	if limit < 1 || limit > search.MaxLimit {
		return fmt.Errorf("--limit %d: want 1..%d", limit, search.MaxLimit)
	}
	svc, closeEngine, err := openEngine(cfg, logger)
	if err != nil {
		return err
	}
	defer closeEngine()
	ix, model, err := openSearchIndex(ctx, cfg, db, logger)
	if err != nil {
		return err
	}
	defer ix.Close()

	var query []float32
	if image != "" {
		data, err := os.ReadFile(image)
		if err != nil {
			return err
		}
		img, err := imaging.DecodeWith(data, decodeOptions(cfg))
		if err != nil {
			return fmt.Errorf("%s: %w", image, err)
		}
		out, err := svc.EmbedImages(ctx, model, []*imaging.Image{img})
		if err != nil {
			return err
		}
		query = out[0]
	} else if query, err = svc.EmbedText(ctx, model, text, ""); err != nil {
		return err
	}
	hits, err := ix.SearchCLIP(ctx, model, query, limit)
	if err != nil {
		return err
	}
	return printHits(stdout, hits, asJSON)
}

func printHits(w io.Writer, hits []search.Hit, asJSON bool) error {
	if asJSON {
		if hits == nil {
			hits = []search.Hit{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(hits)
	}
	if len(hits) == 0 {
		_, err := fmt.Fprintln(w, "no results (is anything indexed with this model?)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DISTANCE\tASSET\tPATH")
	for _, h := range hits {
		fmt.Fprintf(tw, "%.4f\t%s\t%s\n", h.Distance, h.AssetID, h.Path)
	}
	return tw.Flush()
}
