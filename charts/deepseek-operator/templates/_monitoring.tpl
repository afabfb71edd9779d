{{/*
The alert rules (PrometheusRule spec.groups; manifests/monitoring/deepseek-operator.rules.yaml is
rendered from this with the default values by hack/render-monitoring.py). Thresholds and
durations are .Values.monitoring.alerts.*; the defaults are the seed articles' three-level
table (GPU temperature > 85 °C for 5 min, GPU memory > 90 % for 1 min, p99 > 500 ms, batch
failures > 5 %, request timeouts > 2 %, output rejections > 1 %). docs/observability.md says
what each alert means and what to do.

Every expr is "SIGNAL" then, on its last line, "> THRESHOLD" (or "<"): the end-to-end test
evaluates SIGNAL alone and requires series for the sample deployments.

Labels: every alert carries namespace and name (the DeepSeekDeployment). Triton's series get
`name` from the pod label serving.deepseek.ai/deployment (PodMonitor relabeling, or the plain
scrape config); dcgm-exporter's series are joined to it through the operator's
deepseek_operator_serving_pod_info{namespace,name,pod}, after taking exported_namespace /
exported_pod where a scrape without honor_labels renamed dcgm-exporter's own labels.
*/}}
{{- define "dso.byDeployment" -}}
(label_replace(label_replace({{ . }}, "namespace", "$1", "exported_namespace", "(.+)"), "pod", "$1", "exported_pod", "(.+)") * on (namespace, pod) group_left (name) deepseek_operator_serving_pod_info)
{{- end -}}

{{- define "dso.alertGroups" -}}
{{- $a := .Values.monitoring.alerts -}}
{{- $m := .Values.monitoring.tritonModel -}}
{{- $job := .Values.monitoring.operatorJob -}}
- name: deepseek-gpu
  rules:
  - alert: DeepSeekGPUTemperatureHigh
    # dcgm-exporter: DCGM_FI_DEV_GPU_TEMP, °C; DCGM_FI_DEV_FB_USED / FB_FREE, MiB (NVIDIA/dcgm-exporter
    # etc/default-counters.csv, all three in the default set).
    expr: |
      max by (namespace, name, pod, gpu) ({{ include "dso.byDeployment" "DCGM_FI_DEV_GPU_TEMP" }})
      > {{ $a.gpuTemperature.threshold }}
    for: {{ $a.gpuTemperature.for }}
    labels:
      severity: {{ $a.gpuTemperature.severity }}
    annotations:
      summary: {{ `GPU {{ $labels.gpu }} of {{ $labels.namespace }}/{{ $labels.name }} (pod {{ $labels.pod }}) at {{ $value | printf "%.0f" }} °C` | quote }}
      description: {{ printf "Above %v °C for %s: the GPU throttles, then fails. Check the node's cooling and `nvidia-smi -q -d TEMPERATURE,PERFORMANCE` there; cordon the node and delete the pod to move the replica if it stays hot." (toString $a.gpuTemperature.threshold) $a.gpuTemperature.for | quote }}
  - alert: DeepSeekGPUMemoryHigh
    expr: |
      max by (namespace, name, pod, gpu) ({{ include "dso.byDeployment" "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)" }})
      > {{ $a.gpuMemory.threshold }}
    for: {{ $a.gpuMemory.for }}
    labels:
      severity: {{ $a.gpuMemory.severity }}
    annotations:
      summary: {{ `GPU {{ $labels.gpu }} of {{ $labels.namespace }}/{{ $labels.name }} (pod {{ $labels.pod }}) uses {{ $value | humanizePercentage }} of its memory` | quote }}
      description: {{ printf "Above %s of GPU memory for %s (the healthy band is 75-85 %%): the next long prompt or larger batch runs out of memory. Lower spec.engine.maxBatchSize or spec.engine.kvCacheMemoryFraction, or give each replica more GPUs (spec.gpu.perReplica)." (include "dso.percent" $a.gpuMemory.threshold) $a.gpuMemory.for | quote }}
- name: deepseek-serving
  rules:
  - alert: DeepSeekInferenceP99High
    # Triton's nv_inference_request_summary_us{quantile="0.99"} (the operator runs Triton with
    # --metrics-config summary_latencies=true): p99 over about the last minute, per pod; the worst
    # pod is taken (quantiles cannot be averaged).
    expr: |
      max by (namespace, name) (nv_inference_request_summary_us{model="{{ $m }}", quantile="0.99"}) / 1000
      > {{ $a.p99Latency.threshold }}
    for: {{ $a.p99Latency.for }}
    labels:
      severity: {{ $a.p99Latency.severity }}
    annotations:
      summary: {{ `Inference p99 of {{ $labels.namespace }}/{{ $labels.name }} is {{ $value | printf "%.0f" }} ms` | quote }}
      description: {{ printf "p99 above %v ms for %s. Look at the queue time (nv_inference_queue_duration_us) against the compute time on the dashboard: a long queue wants more replicas (spec.replicas or spec.autoscaling), a long compute a smaller maxBatchSize or a faster precision." (toString $a.p99Latency.threshold) $a.p99Latency.for | quote }}
  - alert: DeepSeekBatchFailureRateHigh
    # nv_inference_request_failure (every reason) over every request (success + failure).
    expr: |
      sum by (namespace, name) (rate(nv_inference_request_failure{model="{{ $m }}"}[{{ $a.batchFailureRate.window }}]))
        / (sum by (namespace, name) (rate(nv_inference_request_success{model="{{ $m }}"}[{{ $a.batchFailureRate.window }}]))
           + sum by (namespace, name) (rate(nv_inference_request_failure{model="{{ $m }}"}[{{ $a.batchFailureRate.window }}])))
      > {{ $a.batchFailureRate.threshold }}
    for: {{ $a.batchFailureRate.for }}
    labels:
      severity: {{ $a.batchFailureRate.severity }}
    annotations:
      summary: {{ `{{ $value | humanizePercentage }} of the requests to {{ $labels.namespace }}/{{ $labels.name }} fail` | quote }}
      description: {{ printf "More than %s of the requests failed over %s for %s. The reason label of nv_inference_request_failure says where: BACKEND is the engine (read the pod logs: deepseek-operator diagnose NAME -n NS), REJECTED a full or timed-out queue, CANCELED clients giving up." (include "dso.percent" $a.batchFailureRate.threshold) $a.batchFailureRate.window $a.batchFailureRate.for | replace "diagnose NAME -n NS" "diagnose {{ $labels.name }} -n {{ $labels.namespace }}" | quote }}
  - alert: DeepSeekRequestTimeoutRateHigh
    # Triton's failures with reason REJECTED (the queue policy's timeout, "Request timeout
    # expired", or max_queue_size) or CANCELED (the client cancelled, e.g. its gRPC deadline
    # passed) over every request: the requests that got no answer in time. The reasons:
    # triton-inference-server/core src/metric_model_reporter.cc (failure_reasons_map: REJECTED,
    # CANCELED, BACKEND, OTHER) and src/dynamic_batch_scheduler.cc (FinishRejectedCancelledRequests:
    # timed-out requests are finished with FailureReason::REJECTED, cancelled ones with CANCELED);
    # Triton 2.51 publishes all four at 0 from model load (tests/integration/test_observability.py).
    expr: |
      sum by (namespace, name) (rate(nv_inference_request_failure{model="{{ $m }}", reason=~"REJECTED|CANCELED"}[{{ $a.timeoutRate.window }}]))
        / (sum by (namespace, name) (rate(nv_inference_request_success{model="{{ $m }}"}[{{ $a.timeoutRate.window }}]))
           + sum by (namespace, name) (rate(nv_inference_request_failure{model="{{ $m }}"}[{{ $a.timeoutRate.window }}])))
      > {{ $a.timeoutRate.threshold }}
    for: {{ $a.timeoutRate.for }}
    labels:
      severity: {{ $a.timeoutRate.severity }}
    annotations:
      summary: {{ `{{ $value | humanizePercentage }} of the requests to {{ $labels.namespace }}/{{ $labels.name }} time out` | quote }}
      description: {{ printf "More than %s of the requests were rejected by the queue or cancelled by their clients over %s for %s: the replicas cannot keep up. Add replicas (spec.replicas, spec.autoscaling.maxReplicas) or check for a slow replica on the dashboard's p99 by pod." (include "dso.percent" $a.timeoutRate.threshold) $a.timeoutRate.window $a.timeoutRate.for | quote }}
  - alert: DeepSeekOutputRejectionRateHigh
    # The operator's golden-set analysis: the share of golden prompts whose answer its check
    # rejected (1 - score) in the last analysis. Triton cannot see whether an answer is right.
    expr: |
      1 - deepseek_operator_analysis_accuracy_score
      > {{ $a.outputRejectionRate.threshold }}
    for: {{ $a.outputRejectionRate.for }}
    labels:
      severity: {{ $a.outputRejectionRate.severity }}
    annotations:
      summary: {{ `{{ $value | humanizePercentage }} of the golden-set answers of {{ $labels.namespace }}/{{ $labels.name }} are rejected` | quote }}
      description: {{ printf "More than %s of the golden prompts got an answer their check rejects. Compare score and baseline on the dashboard: a drop after a rollout is the new revision (the operator rolls it back when the drop passes maxDrop); a low score on every revision is the golden set or the model." (include "dso.percent" $a.outputRejectionRate.threshold) | quote }}
- name: deepseek-operator
  rules:
  - alert: DeepSeekRolledBack
    expr: |
      time() - deepseek_operator_last_rollback_timestamp_seconds
      < {{ include "dso.seconds" $a.rollback.within }}
    labels:
      severity: {{ $a.rollback.severity }}
    annotations:
      summary: {{ `{{ $labels.namespace }}/{{ $labels.name }} was rolled back` | quote }}
      description: {{ printf "The operator rolled a revision back in the last %s: traffic is on the previous revision, the failed one is not retried until the spec changes. Read why in status.lastRollback (kubectl describe dsd) and collect the evidence with deepseek-operator diagnose NAME -n NS." $a.rollback.within | replace "diagnose NAME -n NS" "diagnose {{ $labels.name }} -n {{ $labels.namespace }}" | quote }}
  - alert: DeepSeekAnalysisFailing
    expr: |
      deepseek_operator_analysis_consecutive_failures
      >= {{ $a.analysisFailing.threshold }}
    for: {{ $a.analysisFailing.for }}
    labels:
      severity: {{ $a.analysisFailing.severity }}
    annotations:
      summary: {{ `{{ $labels.namespace }}/{{ $labels.name }} failed {{ $value | printf "%.0f" }} analyses in a row` | quote }}
      description: "The revision under test breaks a threshold of spec.rollout.analysis (status.analysis.message says which); at failureLimit the operator rolls it back, or halts where autoRollback is false. Fix the revision or the threshold; do not wait for the rollback."
  - alert: DeepSeekPlacementRefused
    expr: |
      deepseek_operator_placement_refused
      > 0
    for: {{ $a.placementRefused.for }}
    labels:
      severity: {{ $a.placementRefused.severity }}
    annotations:
      summary: {{ `{{ $labels.namespace }}/{{ $labels.name }} cannot be placed: {{ $labels.reason }}` | quote }}
      description: {{ printf "The operator found no GPUs for it for %s. The Placed condition's message gives the numbers and the fix: free or add GPUs (NoCapacity), allow another GPU product (NoGPUFits, UnsupportedGPU), or pick a smaller model or precision." $a.placementRefused.for | quote }}
  - alert: DeepSeekDegraded
    expr: |
      deepseek_operator_resource_phase{phase="Degraded"}
      > 0
    for: {{ $a.degraded.for }}
    labels:
      severity: {{ $a.degraded.severity }}
    annotations:
      summary: {{ `{{ $labels.namespace }}/{{ $labels.name }} is Degraded` | quote }}
      description: {{ printf "Serving, but with fewer ready replicas than asked for or a blocked rollout, for %s. The Ready and Progressing conditions name the blocker (pods not scheduled, crash loop, engine build); deepseek-operator diagnose NAME -n NS collects the pods' descriptions and logs." $a.degraded.for | replace "diagnose NAME -n NS" "diagnose {{ $labels.name }} -n {{ $labels.namespace }}" | quote }}
  - alert: DeepSeekServingDown
    expr: |
      (deepseek_operator_resource_ready_replicas and on (namespace, name) (deepseek_operator_resource_desired_replicas > 0))
      < 1
    for: {{ $a.servingDown.for }}
    labels:
      severity: {{ $a.servingDown.severity }}
    annotations:
      summary: {{ `{{ $labels.namespace }}/{{ $labels.name }} has no ready replica` | quote }}
      description: {{ printf "Full outage for %s: every request fails. Switch traffic to the standby cluster, run deepseek-operator diagnose NAME -n NS now (the incident plan wants the diagnostics within a minute) and tell the service owner." $a.servingDown.for | replace "diagnose NAME -n NS" "diagnose {{ $labels.name }} -n {{ $labels.namespace }}" | quote }}
  - alert: DeepSeekOperatorDown
    expr: |
      (sum(deepseek_operator_active{job="{{ $job }}"}) or vector(0))
      < 1
    for: {{ $a.operatorDown.for }}
    labels:
      severity: {{ $a.operatorDown.severity }}
      job: {{ $job }}
    annotations:
      summary: "No replica of the DeepSeek operator is working"
      description: {{ printf "For %s no scrape of job %s found a working replica: rollouts, analyses and rollbacks are stopped (serving goes on). Check the operator's pods (kubectl -n NAMESPACE get pods, logs) and, with several replicas, the peering (ClusterKopfPeering)." $a.operatorDown.for $job | quote }}
{{- end -}}

{{/* "15m" -> 900 (s, m, h) */}}
{{- define "dso.seconds" -}}
{{- $v := toString . -}}
{{- if hasSuffix "h" $v -}}{{ mul (trimSuffix "h" $v | int) 3600 }}
{{- else if hasSuffix "m" $v -}}{{ mul (trimSuffix "m" $v | int) 60 }}
{{- else -}}{{ trimSuffix "s" $v | int }}
{{- end -}}
{{- end -}}

{{/* 0.05 -> "5 %" */}}
{{- define "dso.percent" -}}
{{- printf "%g %%" (mulf . 100.0) -}}
{{- end -}}
