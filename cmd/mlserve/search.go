package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/search"
)

// searchOptions are search's flags and arguments.
type searchOptions struct {
	db     dbFlags
	limit  int
	image  string
	ocr    bool
	asJSON bool
	text   string
}

// searchCommand is `mlserve search`.
func (a *app) searchCommand() *cobra.Command {
	var o searchOptions
	cmd := &cobra.Command{
		Use:   "search [flags] TEXT...",
		Short: "Search indexed images by text, example image or recognised text",
		Long: `Finds the indexed images nearest to a text (CLIP's text encoder) or to an
example image (its image encoder), by cosine distance, nearest first: in our
own schema, or with --immich in an Immich database's smart_search.

With --ocr, finds the images whose recognised text (indexed with
` + "`mlserve index --ocr MODEL`" + `) contains the text, or resembles it, best first.`,
		Example: `  mlserve search "a dog on the beach"
  mlserve search "a dog" --limit 2 --json
  mlserve search --image holiday.jpg
  mlserve search --ocr "invoice 2024"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.text = strings.TrimSpace(strings.Join(args, " "))
			if (o.text == "") == (o.image == "") {
				return usagef("give a search text or --image (one of them)")
			}
			if o.ocr && (o.image != "" || o.db.immich) {
				return usagef("--ocr searches text in our own schema: not with --image or --immich")
			}
			if o.limit < 1 || o.limit > search.MaxLimit {
				return usagef("--limit %d: want 1..%d", o.limit, search.MaxLimit)
			}
			cfg, logger, err := a.setup(true)
			if err != nil {
				return err
			}
			if cfg.DatabaseURL == "" {
				return errNoDatabase
			}
			if o.ocr {
				return runSearchOCR(cmd.Context(), o, a.stdout, cfg, logger)
			}
			return runSearch(cmd.Context(), o, a.stdout, cfg, logger)
		},
	}
	f := cmd.Flags()
	o.db.register(f)
	f.IntVarP(&o.limit, "limit", "n", 20, fmt.Sprintf("number of results (1..%d)", search.MaxLimit))
	f.StringVar(&o.image, "image", "", "search by this example image instead of a text")
	f.BoolVar(&o.ocr, "ocr", false, "search the recognised text of the images (indexed with --ocr) instead of their content")
	f.BoolVar(&o.asJSON, "json", false, "print JSON")
	return cmd
}

func runSearch(ctx context.Context, o searchOptions, stdout io.Writer, cfg *config.Config, logger *slog.Logger) error {
	var data []byte
	if o.image != "" {
		var err error
		if data, err = os.ReadFile(o.image); err != nil {
			return err
		}
	}
	// The runtime and the model load before the database is touched
	// (Immich mode without --model reads the model Immich is configured
	// with first).
	svc, closeEngine, err := openEngine(cfg, false, logger)
	if err != nil {
		return err
	}
	defer closeEngine()
	textual := o.image == ""
	loaded := !o.db.immich || o.db.model != ""
	if loaded {
		if err := preload(ctx, svc, cmp.Or(o.db.model, search.DefaultImmichModel), textual, taskFlags{}); err != nil {
			return err
		}
	}
	ix, model, err := openSearchIndex(ctx, cfg, o.db, logger)
	if err != nil {
		return err
	}
	defer ix.Close()
	if !loaded {
		if err := preload(ctx, svc, model, textual, taskFlags{}); err != nil {
			return err
		}
	}

	var query []float32
	if data != nil {
		if query, err = svc.EmbedImageData(ctx, model, data); err != nil {
			return fmt.Errorf("%s: %w", o.image, err)
		}
	} else if query, err = svc.EmbedText(ctx, model, o.text, ""); err != nil {
		return err
	}
	hits, err := ix.SearchCLIP(ctx, model, query, o.limit)
	if err != nil {
		return err
	}
	return printHits(stdout, hits, o.asJSON)
}

// runSearchOCR searches the recognised text of our schema.
func runSearchOCR(ctx context.Context, o searchOptions, stdout io.Writer, cfg *config.Config, logger *slog.Logger) error {
	st, err := openStore(ctx, o.db.schema, cfg, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	hits, err := st.SearchOCR(ctx, o.text, o.limit)
	if errors.Is(err, search.ErrInvalid) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if o.asJSON {
		if hits == nil {
			hits = []search.OCRHit{}
		}
		return writeJSON(stdout, hits)
	}
	if len(hits) == 0 {
		_, err := fmt.Fprintln(stdout, "no results (is anything indexed with --ocr?)")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCORE\tASSET\tPATH\tTEXT")
	for _, h := range hits {
		var lines []string
		for _, l := range h.Lines {
			lines = append(lines, l.Text)
		}
		fmt.Fprintf(tw, "%.2f\t%d\t%s\t%s\n", h.Score, h.AssetID, h.Path, strings.Join(lines, " | "))
	}
	return tw.Flush()
}

// openStore opens our schema for the commands that only read or edit it
// (search --ocr, people): no model is needed.
func openStore(ctx context.Context, schema string, cfg *config.Config, logger *slog.Logger) (*search.Store, error) {
	if cfg.DatabaseURL == "" {
		return nil, errNoDatabase
	}
	return search.Open(ctx, search.Options{URL: cfg.DatabaseURL, Schema: schema}, logger)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printHits(w io.Writer, hits []search.Hit, asJSON bool) error {
	if asJSON {
		if hits == nil {
			hits = []search.Hit{}
		}
		return writeJSON(w, hits)
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
