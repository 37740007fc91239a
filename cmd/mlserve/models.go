package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mlserve/mlserve/models"
)

// modelsCommand is `mlserve models`: the model cache (Immich's layout,
// MACHINE_LEARNING_CACHE_FOLDER), as the server uses it.
func (a *app) modelsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "models",
		Short: "Download, list, remove and verify the models of the cache",
		Long: `Manages the model cache (MACHINE_LEARNING_CACHE_FOLDER, Immich's layout) with
the server's own downloader: HF_ENDPOINT, MACHINE_LEARNING_MODEL_ORGANIZATION
and _REVISION, HF_TOKEN and MLSERVE_OCR_BASE_URL apply. Pull models on a host
with network, then serve them with HF_HUB_OFFLINE=1.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.groupRun(cmd, args) },
	}
	cmd.AddCommand(a.modelsPullCommand(), a.modelsListCommand(), a.modelsRmCommand(), a.modelsVerifyCommand())
	return cmd
}

// completeModelNames completes catalogue names.
func completeModelNames(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, info := range models.All() {
		if strings.HasPrefix(info.Name, prefix) {
			out = append(out, info.Name+"\t"+string(info.Task))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// modelNames checks that every argument is a catalogue name.
func modelNames(args []string) error {
	if len(args) == 0 {
		return usagef("name at least one model (mlserve models pull --help lists where to find names)")
	}
	return knownModels(args)
}

// knownModels refuses (as a usage error) a name that is not in the
// catalogue.
func knownModels(args []string) error {
	for _, n := range args {
		if _, err := models.Find(n); err != nil {
			return usageError{err}
		}
	}
	return nil
}

// openModelStore is the model cache of the configuration, for the models
// commands that only read or remove (no download observer).
func (a *app) openModelStore() (*models.Store, error) {
	cfg, logger, err := a.setup(true)
	if err != nil {
		return nil, err
	}
	return newStore(cfg, nil, logger)
}

func (a *app) modelsPullCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pull NAME...",
		Short: "Download models into the cache (what the server would download on first use)",
		Long: `Downloads every file of each model into the cache, as the server does on first
use, fetching only what is missing, and records the hub's sizes and sha256 in
the model folder (.mlserve-manifest.json) for ` + "`mlserve models verify`" + `.
Names are Immich's: CLIP (ViT-B-32__openai, ViT-SO400M-16-SigLIP2-384__webli…),
faces (buffalo_l, antelopev2…), OCR (PP-OCRv5_mobile, EN__PP-OCRv5_mobile…).
On a terminal a bar shows bytes, rate and ETA; otherwise a line every few
seconds.`,
		Example: `  mlserve models pull ViT-B-32__openai buffalo_l PP-OCRv5_mobile
  HF_ENDPOINT=https://hf-mirror.example mlserve models pull ViT-B-32__openai`,
		ValidArgsFunction: completeModelNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := modelNames(args); err != nil {
				return err
			}
			cfg, logger, err := a.setup(true)
			if err != nil {
				return err
			}
			bar := a.newProgress("downloading", true, 5*time.Second)
			store, err := newStore(cfg, newDownloadProgress(bar), logger)
			if err != nil {
				bar.Close()
				return err
			}
			defer store.Close()
			var pulled []models.Pulled
			var errs []error
			for _, name := range args {
				p, err := store.Pull(cmd.Context(), name)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				pulled = append(pulled, p)
			}
			bar.Close()
			for _, p := range pulled {
				fmt.Fprintf(a.stdout, "%s\t%s\n", p.Info.Name, strings.Join(p.Folders, " "))
			}
			if errors.Is(cmd.Context().Err(), context.Canceled) {
				return cmd.Context().Err()
			}
			return errors.Join(errs...)
		},
	}
}

func (a *app) modelsListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the models in the cache",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := a.setup(true)
			if err != nil {
				return err
			}
			store, err := newStore(cfg, nil, logger)
			if err != nil {
				return err
			}
			defer store.Close()
			list, err := store.List()
			if err != nil {
				return err
			}
			if asJSON {
				type row struct {
					Task     string    `json:"task"`
					Name     string    `json:"name"`
					Path     string    `json:"path"`
					Types    []string  `json:"types"`
					Files    int       `json:"files"`
					Bytes    int64     `json:"bytes"`
					Modified time.Time `json:"modified"`
					Manifest bool      `json:"manifest"`
					Known    bool      `json:"known"`
				}
				rows := []row{}
				for _, m := range list {
					r := row{Task: string(m.Task), Name: m.Folder, Path: m.Path, Types: []string{}, Files: m.Files,
						Bytes: m.Bytes, Modified: m.Modified, Manifest: m.Manifest, Known: m.Known}
					for _, t := range m.Types {
						r.Types = append(r.Types, string(t))
					}
					rows = append(rows, r)
				}
				return writeJSON(a.stdout, rows)
			}
			if len(list) == 0 {
				fmt.Fprintf(a.stdout, "no models in %s\n", cfg.CacheFolder)
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TASK\tNAME\tTYPES\tSIZE\tMODIFIED\tVERIFIABLE")
			for _, m := range list {
				types := make([]string, 0, len(m.Types))
				for _, t := range m.Types {
					types = append(types, string(t))
				}
				ts := strings.Join(types, ",")
				switch {
				case !m.Known:
					ts = "(not a known model)"
				case ts == "":
					ts = "(incomplete)"
				}
				verifiable := "no (pull to record)"
				if m.Manifest {
					verifiable = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Task, m.Folder, ts, size(m.Bytes), m.Modified.Local().Format("2006-01-02 15:04"), verifiable)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) modelsRmCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove models from the cache",
		Long: `Removes each model's folder from the cache. For OCR, the name's own folder goes
(its recognizer; the detector too for a name without a language prefix);
the detector folder that other languages share stays. A running server keeps
the models it has loaded, and downloads them again when it next loads them.`,
		ValidArgsFunction: completeModelNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := modelNames(args); err != nil {
				return err
			}
			store, err := a.openModelStore()
			if err != nil {
				return err
			}
			defer store.Close()
			var errs []error
			for _, name := range args {
				removed, err := store.Remove(name)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				for _, p := range removed {
					fmt.Fprintf(a.stdout, "removed %s\n", p)
				}
			}
			return errors.Join(errs...)
		},
	}
}

func (a *app) modelsVerifyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "verify [NAME...]",
		Short: "Check the cached files against the sizes and sha256 recorded at download",
		Long: `Reads every file of each model folder (all of the cache without names) and
compares it with the sizes and sha256 the hub listed when it was downloaded
(.mlserve-manifest.json; RapidOCR's pinned digests for OCR folders without
one). Exits 1 if any file is missing or differs, or if a folder has no record
to check against (pull it again to record one).`,
		ValidArgsFunction: completeModelNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := knownModels(args); err != nil {
				return err
			}
			store, err := a.openModelStore()
			if err != nil {
				return err
			}
			defer store.Close()
			var keys []string
			if len(args) == 0 {
				list, err := store.List()
				if err != nil {
					return err
				}
				for _, m := range list {
					keys = append(keys, string(m.Task)+"/"+m.Folder)
				}
			}
			for _, n := range args {
				ks, _ := models.Folders(n)
				for _, k := range ks {
					if !slices.Contains(keys, k) {
						keys = append(keys, k)
					}
				}
			}
			bad := 0
			for _, k := range keys {
				v, err := store.Verify(cmd.Context(), k)
				switch {
				case errors.Is(err, models.ErrNotCached):
					fmt.Fprintf(a.stdout, "%s: not in the cache\n", k)
					bad++
					continue
				case err != nil:
					return fmt.Errorf("%s: %w", k, err)
				}
				switch {
				case v.Source == "":
					fmt.Fprintf(a.stdout, "%s: cannot verify: no record of its files (downloaded by Immich or an older mlserve; `mlserve models pull` records one)\n", k)
					bad++
				case v.OK():
					fmt.Fprintf(a.stdout, "%s: ok (%d files, %s)\n", k, len(v.Files), v.Source)
				default:
					bad++
					fmt.Fprintf(a.stdout, "%s: FAILED\n", k)
					for _, f := range v.Files {
						if f.Problem != "" {
							fmt.Fprintf(a.stdout, "  %s: %s\n", f.Path, f.Problem)
						}
					}
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d model folders failed verification (remove and pull a damaged model again: mlserve models rm NAME && mlserve models pull NAME)", bad, len(keys))
			}
			return nil
		},
	}
}
