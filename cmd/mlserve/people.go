package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mlserve/mlserve/search"
)

// peopleCommand is `mlserve people`: the people found among the faces
// that `mlserve index --faces` stored (our schema).
func (a *app) peopleCommand() *cobra.Command {
	var schema string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "people",
		Short: "Group indexed faces into people, list, name and merge them",
		Long: `Works on the faces that ` + "`mlserve index --faces MODEL`" + ` stored in our own schema
(MLSERVE_DATABASE_URL): cluster groups the faces without a person into
people, as Immich's facial recognition does; list, show, name and merge
work on the people.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.groupRun(cmd, args) },
	}
	cmd.PersistentFlags().StringVar(&schema, "schema", search.DefaultSchema, "PostgreSQL schema of our own tables")
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON")

	// withStore runs fn on the schema's store; search's ErrInvalid is a
	// usage error, ErrNotFound a failure.
	withStore := func(ctx context.Context, fn func(*search.Store) error) error {
		cfg, logger, err := a.setup(true)
		if err != nil {
			return err
		}
		st, err := openStore(ctx, schema, cfg, logger)
		if err != nil {
			return err
		}
		defer st.Close()
		err = fn(st)
		if errors.Is(err, search.ErrInvalid) {
			return usageError{err}
		}
		return err
	}
	personID := func(s string) (int64, error) {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return 0, usagef("%q is not a person id (see mlserve people list)", s)
		}
		return id, nil
	}

	var (
		clusterMin, listMin   int
		listLimit, listOffset int
		showLimit, showOffset int
		maxDistance           float64
	)
	cluster := &cobra.Command{
		Use:   "cluster",
		Short: "Group the faces without a person into people",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), func(st *search.Store) error {
				res, err := st.ClusterFaces(cmd.Context(), search.ClusterOptions{MinFaces: clusterMin, MaxDistance: maxDistance})
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, res)
				}
				fmt.Fprintf(a.stdout, "%d faces looked at: %d assigned (%d new people), %d left without a person; %d empty people removed\n",
					res.Faces, res.Assigned, res.Created, res.Unassigned, res.Removed)
				return nil
			})
		},
	}
	cluster.Flags().IntVar(&clusterMin, "min-faces", search.DefaultMinFaces, "faces within --max-distance (the face included) that make a face a core face, as Immich's setting")
	cluster.Flags().Float64Var(&maxDistance, "max-distance", search.DefaultMaxDistance, "cosine distance within which faces are neighbours (0..2)")

	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List people: named first, then by number of faces",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), func(st *search.Store) error {
				people, err := st.ListPeople(cmd.Context(), search.PeopleOptions{MinFaces: listMin, Limit: listLimit, Offset: listOffset})
				if err != nil {
					return err
				}
				if asJSON {
					if people == nil {
						people = []search.Person{}
					}
					return writeJSON(a.stdout, people)
				}
				if len(people) == 0 {
					fmt.Fprintln(a.stdout, "no people (index with --faces, then run mlserve people cluster)")
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tFACES\tPHOTOS\tCOVER")
				for _, p := range people {
					cover := "-"
					if p.Cover != nil {
						cover = p.Cover.Path
					}
					fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\n", p.ID, dash(p.Name), p.FaceCount, p.AssetCount, cover)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().IntVar(&listMin, "min-faces", 0, "hide unnamed people with fewer faces")
	list.Flags().IntVarP(&listLimit, "limit", "n", 100, fmt.Sprintf("people to list (1..%d)", search.MaxLimit))
	list.Flags().IntVar(&listOffset, "offset", 0, "skip this many people first")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a person and the photos they appear in",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := personID(args[0])
			if err != nil {
				return err
			}
			return withStore(cmd.Context(), func(st *search.Store) error {
				p, err := st.Person(cmd.Context(), id)
				if err != nil {
					return err
				}
				assets, err := st.PersonAssets(cmd.Context(), id, showLimit, showOffset)
				if err != nil {
					return err
				}
				if asJSON {
					if assets == nil {
						assets = []search.PersonAsset{}
					}
					return writeJSON(a.stdout, struct {
						search.Person
						Assets []search.PersonAsset `json:"assets"`
					}{p, assets})
				}
				fmt.Fprintf(a.stdout, "person %d %s: %d faces in %d photos\n", p.ID, dash(p.Name), p.FaceCount, p.AssetCount)
				for _, as := range assets {
					fmt.Fprintf(a.stdout, "%d\t%s\n", as.AssetID, as.Path)
				}
				return nil
			})
		},
	}
	show.Flags().IntVarP(&showLimit, "limit", "n", 100, fmt.Sprintf("photos to list (1..%d)", search.MaxLimit))
	show.Flags().IntVar(&showOffset, "offset", 0, "skip this many photos first")

	name := &cobra.Command{
		Use:     "name ID NAME...",
		Aliases: []string{"rename"},
		Short:   "Name a person (an empty NAME, \"\", removes the name)",
		Args:    minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := personID(args[0])
			if err != nil {
				return err
			}
			return withStore(cmd.Context(), func(st *search.Store) error {
				p, err := st.RenamePerson(cmd.Context(), id, strings.Join(args[1:], " "))
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, p)
				}
				fmt.Fprintf(a.stdout, "person %d is now %s\n", p.ID, dash(p.Name))
				return nil
			})
		},
	}

	merge := &cobra.Command{
		Use:   "merge INTO FROM...",
		Short: "Merge people into one: FROM's faces move to INTO, FROM goes",
		Args:  minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids := make([]int64, len(args))
			for i, s := range args {
				id, err := personID(s)
				if err != nil {
					return err
				}
				ids[i] = id
			}
			return withStore(cmd.Context(), func(st *search.Store) error {
				p, err := st.MergePeople(cmd.Context(), ids[0], ids[1:]...)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, p)
				}
				fmt.Fprintf(a.stdout, "person %d %s: %d faces in %d photos\n", p.ID, dash(p.Name), p.FaceCount, p.AssetCount)
				return nil
			})
		},
	}
	cmd.AddCommand(cluster, list, show, name, merge)
	return cmd
}

// exactArgs and minArgs are cobra's validators as usage errors.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %d argument(s), got %d", n, len(args))
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("want at least %d arguments, got %d", n, len(args))
		}
		return nil
	}
}
