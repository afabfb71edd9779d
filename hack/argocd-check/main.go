// Command dso-argocd runs Argo CD's own health and diff code on our objects, so the tests check
// what an Argo CD application controller would report rather than a re-implementation of it.
//
// It is built by hack/build-argocd-tools.sh inside a copy of github.com/argoproj/argo-cd/v3 at the
// version pinned in hack/tools.versions (that module's go.mod/go.sum and replace block are used as
// they are), and cached under ~/.cache/deepseek-operator/tools/argocd-<version>/.
//
// Subcommands (every result is one JSON document on stdout):
//
//	health  --argocd-cm CM.yaml OBJ.yaml...
//	    Resource overrides are read from an argocd-cm ConfigMap by Argo CD's SettingsManager
//	    (util/settings, GetResourceOverrides, the same call the application controller makes), then
//	    each object's health comes from gitops-engine's health.GetResourceHealth with
//	    lua.ResourceHealthOverrides (Argo CD v3.2 controller/health.go, setApplicationHealth).
//	    A ConfigMap override runs without open libs unless argocd-cm says useOpenLibs.
//	health-test DIR
//	    Argo CD's own test layout: DIR/health.lua, DIR/health_test.yaml, DIR/testdata/*.yaml, run the
//	    way util/lua/health_test.go does but in the ConfigMap sandbox (UseOpenLibs=false).
//	track   --app NAME --namespace NS OBJ.yaml...
//	    The objects as Argo CD applies them: util/argo ResourceTracking.SetAppInstance with the
//	    default annotation tracking (controller/state.go).
//	application APP.yaml...
//	    Each file decoded strictly (unknown fields are errors) into Argo CD's own Application type
//	    (pkg/apis/application/v1alpha1), and its sync options listed.
//	diff    --argocd-cm CM.yaml --mode ssa|csa [--server-side-diff] [--kubeconfig FILE] PAIRS.json
//	    PAIRS.json is [{"name":..., "desired":{...}, "live":{...}}]. Each pair is compared by
//	    util/argo/diff.StateDiffs with the DiffConfig the controller builds (controller/state.go,
//	    CompareAppState): the argocd-cm overrides and normalizers, annotation tracking, no cache,
//	    manager argocd-controller; --mode ssa adds WithStructuredMergeDiff(true) and the GVK parser
//	    loaded from the cluster's OpenAPI by gitops-engine's KubectlCmd.LoadOpenAPISchema, as for an
//	    Application with ServerSideApply=true; csa is client-side apply (three-way diff against the
//	    kubectl.kubernetes.io/last-applied-configuration annotation).
//	    --server-side-diff is the compare option ServerSideDiff=true (controller/state.go,
//	    CompareAppState): the predicted live state is a server-side apply dry run of the desired
//	    object as argocd-controller against the cluster (gitops-engine diff.K8sServerSideDryRunner
//	    over argo-cd util/kube.ManageServerSideDiffDryRuns, as controller/sync.go,
//	    getServerSideDiffDryRunApplier, builds it); it needs --kubeconfig.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	gitopsdiff "github.com/argoproj/gitops-engine/pkg/diff"
	"github.com/argoproj/gitops-engine/pkg/health"
	"github.com/argoproj/gitops-engine/pkg/utils/kube"
	"github.com/argoproj/gitops-engine/pkg/utils/tracing"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/argo"
	argodiff "github.com/argoproj/argo-cd/v3/util/argo/diff"
	"github.com/argoproj/argo-cd/v3/util/argo/normalizers"
	kubeutil "github.com/argoproj/argo-cd/v3/util/kube"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

const namespace = "argocd"

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: dso-argocd health|health-test|track|diff ... (see the comment in hack/argocd-check/main.go)"))
	}
	var err error
	var out any
	switch os.Args[1] {
	case "health":
		out, err = cmdHealth(os.Args[2:])
	case "health-test":
		out, err = cmdHealthTest(os.Args[2:])
	case "track":
		out, err = cmdTrack(os.Args[2:])
	case "diff":
		out, err = cmdDiff(os.Args[2:])
	case "application":
		out, err = cmdApplication(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q: want health, health-test, track, diff or application", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "dso-argocd:", err)
	os.Exit(2)
}

func readObject(path string) (*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// overridesFrom reads resource overrides from an argocd-cm ConfigMap file through Argo CD's
// SettingsManager backed by a fake clientset holding that ConfigMap and an empty argocd-secret
// (as util/settings/settings_test.go's fixtures do).
func overridesFrom(cmPath string) (map[string]v1alpha1.ResourceOverride, error) {
	data, err := os.ReadFile(cmPath)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	if err := yaml.Unmarshal(data, cm); err != nil {
		return nil, fmt.Errorf("%s: %w", cmPath, err)
	}
	if cm.Name != common.ArgoCDConfigMapName {
		return nil, fmt.Errorf("%s: metadata.name is %q; Argo CD reads only %q", cmPath, cm.Name, common.ArgoCDConfigMapName)
	}
	cm.Namespace = namespace
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels["app.kubernetes.io/part-of"] = "argocd"
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: common.ArgoCDSecretName, Namespace: namespace,
		Labels: map[string]string{"app.kubernetes.io/part-of": "argocd"},
	}}
	mgr := settings.NewSettingsManager(context.Background(), fake.NewClientset(cm, secret), namespace)
	return mgr.GetResourceOverrides()
}

type healthResult struct {
	File    string `json:"file"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func cmdHealth(args []string) (any, error) {
	fs := flag.NewFlagSet("health", flag.ExitOnError)
	cmPath := fs.String("argocd-cm", "", "argocd-cm ConfigMap YAML")
	_ = fs.Parse(args)
	if *cmPath == "" {
		return nil, errors.New("health: --argocd-cm is required")
	}
	overrides, err := overridesFrom(*cmPath)
	if err != nil {
		return nil, err
	}
	results := []healthResult{}
	for _, path := range fs.Args() {
		obj, err := readObject(path)
		if err != nil {
			return nil, err
		}
		results = append(results, health1(path, obj, lua.ResourceHealthOverrides(overrides)))
	}
	return results, nil
}

func health1(path string, obj *unstructured.Unstructured, overrides lua.ResourceHealthOverrides) healthResult {
	r := healthResult{File: path}
	st, err := health.GetResourceHealth(obj, overrides)
	if err != nil {
		r.Error = err.Error()
	}
	if st != nil {
		r.Status = string(st.Status)
		r.Message = st.Message
	}
	return r
}

type healthTest struct {
	Tests []struct {
		InputPath    string              `json:"inputPath"`
		HealthStatus health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type healthTestResult struct {
	healthResult
	WantStatus  string `json:"wantStatus"`
	WantMessage string `json:"wantMessage"`
}

func cmdHealthTest(args []string) (any, error) {
	if len(args) != 1 {
		return nil, errors.New("health-test: want one folder holding health.lua, health_test.yaml and testdata/")
	}
	dir := args[0]
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return nil, err
	}
	var tests healthTest
	if err := yaml.Unmarshal(data, &tests); err != nil {
		return nil, fmt.Errorf("health_test.yaml: %w", err)
	}
	results := []healthTestResult{}
	for _, t := range tests.Tests {
		path := filepath.Join(dir, t.InputPath)
		obj, err := readObject(path)
		if err != nil {
			return nil, err
		}
		gvk := obj.GroupVersionKind()
		// The ConfigMap sandbox: an override with HealthLua and UseOpenLibs false, exactly what
		// resource.customizations.health.<group>_<Kind> in argocd-cm produces.
		overrides := lua.ResourceHealthOverrides{
			lua.GetConfigMapKey(gvk): {HealthLua: string(script), UseOpenLibs: false},
		}
		results = append(results, healthTestResult{
			healthResult: health1(t.InputPath, obj, overrides),
			WantStatus:   string(t.HealthStatus.Status),
			WantMessage:  t.HealthStatus.Message,
		})
	}
	return results, nil
}

func cmdTrack(args []string) (any, error) {
	fs := flag.NewFlagSet("track", flag.ExitOnError)
	app := fs.String("app", "", "Application name")
	ns := fs.String("namespace", "", "Application destination namespace")
	_ = fs.Parse(args)
	if *app == "" {
		return nil, errors.New("track: --app is required")
	}
	out := []map[string]any{}
	for _, path := range fs.Args() {
		obj, err := readObject(path)
		if err != nil {
			return nil, err
		}
		if err := argo.NewResourceTracking().SetAppInstance(obj, common.LabelKeyAppInstance, *app, *ns, v1alpha1.TrackingMethodAnnotation, ""); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, obj.Object)
	}
	return out, nil
}

type diffPair struct {
	Name    string         `json:"name"`
	Desired map[string]any `json:"desired"`
	Live    map[string]any `json:"live"`
}

type diffResult struct {
	Name           string `json:"name"`
	Modified       bool   `json:"modified"`
	NormalizedLive string `json:"normalizedLive"`
	PredictedLive  string `json:"predictedLive"`
}

func cmdDiff(args []string) (any, error) {
	fs := flag.NewFlagSet("diff", flag.ExitOnError)
	cmPath := fs.String("argocd-cm", "", "argocd-cm ConfigMap YAML")
	mode := fs.String("mode", "", "ssa (ServerSideApply=true) or csa (client-side apply)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the cluster (ssa: its OpenAPI gives the GVK parser)")
	serverSide := fs.Bool("server-side-diff", false, "the compare option ServerSideDiff=true (dry runs against the cluster)")
	_ = fs.Parse(args)
	if *cmPath == "" || fs.NArg() != 1 {
		return nil, errors.New("diff: want --argocd-cm CM.yaml --mode ssa|csa [--server-side-diff] [--kubeconfig FILE] PAIRS.json")
	}
	if *mode != "ssa" && *mode != "csa" {
		return nil, fmt.Errorf("diff: --mode is %q; want ssa or csa", *mode)
	}
	if (*mode == "ssa" || *serverSide) && *kubeconfig == "" {
		return nil, errors.New("diff --mode ssa or --server-side-diff: --kubeconfig is required (the GVK parser and the dry runs need the cluster)")
	}
	overrides, err := overridesFrom(*cmPath)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return nil, err
	}
	var pairs []diffPair
	if err := json.Unmarshal(data, &pairs); err != nil {
		return nil, fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	b := argodiff.NewDiffConfigBuilder().
		WithDiffSettings(nil, overrides, false, normalizers.IgnoreNormalizerOpts{}).
		WithTracking(common.LabelKeyAppInstance, string(v1alpha1.TrackingMethodAnnotation)).
		WithNoCache().
		WithManager(common.ArgoCDSSAManager).
		WithServerSideDiff(*serverSide)
	if *kubeconfig != "" {
		rest, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			return nil, err
		}
		kubectl := &kube.KubectlCmd{Log: logr.Discard(), Tracer: tracing.NopTracer{}}
		schema, parser, err := kubectl.LoadOpenAPISchema(rest)
		if err != nil {
			return nil, err
		}
		b = b.WithGVKParser(parser) // the controller always sets it (CompareAppState)
		if *serverSide {
			applier, cleanup, err := kubeutil.ManageServerSideDiffDryRuns(rest, schema, nil)
			if err != nil {
				return nil, err
			}
			defer cleanup()
			b = b.WithServerSideDryRunner(gitopsdiff.NewK8sServerSideDryRunner(applier))
		}
	}
	if *mode == "ssa" {
		b = b.WithStructuredMergeDiff(true)
	}
	cfg, err := b.Build()
	if err != nil {
		return nil, err
	}
	results := []diffResult{}
	for _, p := range pairs {
		desired := &unstructured.Unstructured{Object: p.Desired}
		var live *unstructured.Unstructured
		if p.Live != nil {
			live = &unstructured.Unstructured{Object: p.Live}
		}
		res, err := argodiff.StateDiff(live, desired, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		results = append(results, diffResult{
			Name: p.Name, Modified: res.Modified,
			NormalizedLive: string(res.NormalizedLive), PredictedLive: string(res.PredictedLive),
		})
	}
	return results, nil
}

type applicationResult struct {
	File        string   `json:"file"`
	Name        string   `json:"name"`
	SyncWave    string   `json:"syncWave"`
	SyncOptions []string `json:"syncOptions"`
	Automated   bool     `json:"automated"`
	Path        string   `json:"path"`
}

func cmdApplication(args []string) (any, error) {
	results := []applicationResult{}
	for _, path := range args {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var app v1alpha1.Application
		if err := yaml.UnmarshalStrict(data, &app); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if app.Kind != "Application" || app.APIVersion != "argoproj.io/v1alpha1" {
			return nil, fmt.Errorf("%s: %s/%s is not an argoproj.io/v1alpha1 Application", path, app.APIVersion, app.Kind)
		}
		r := applicationResult{File: path, Name: app.Name, SyncWave: app.Annotations["argocd.argoproj.io/sync-wave"]}
		if app.Spec.Source != nil {
			r.Path = app.Spec.Source.Path
		}
		if app.Spec.SyncPolicy != nil {
			r.SyncOptions = app.Spec.SyncPolicy.SyncOptions
			r.Automated = app.Spec.SyncPolicy.Automated != nil
		}
		results = append(results, r)
	}
	return results, nil
}
