"""The "LLMOps / Training run" dashboard: one run's memory, GPUs, steps, where the time goes (phases,
tokens/s, MFU, power), communication, checkpoints.

Every query filters on the ``run`` and ``rank`` variables (``gpu`` on device series), except on the
run-level series (``llmops.metrics.catalogue.RUN_LEVEL``: the prediction, which rank 0 alone exports); the drift,
communication and checkpoint panels also draw the alert thresholds from the rules file's
``llmops:threshold:*`` series, so the lines move when a user tunes them.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.dashboard import DashboardLinkType

from llmops.ops.dashboards.panels import (
    BYTES,
    BYTES_PER_SECOND,
    COUNT,
    JOULES,
    RATIO,
    SECONDS,
    WATTS,
    graph,
    info_table,
    label_variable,
    query,
    states,
)
from llmops.ops.shipped import RUNBOOK_BASE

UID = "llmops-training-run"
TITLE = "LLMOps / Training run"

RUN = 'run=~"$run"'
S = f'{RUN}, rank=~"$rank"'  # every llmops series carries run and rank
G = f'{S}, gpu=~"$gpu"'
RATE = "$__rate_interval"


def _mean(histogram: str, selector: str = S) -> str:
    """Mean observation of a histogram over the rate window (seconds)."""
    return f"rate({histogram}_sum{{{selector}}}[{RATE}]) / rate({histogram}_count{{{selector}}}[{RATE}])"


# What a panel says when it has no data, where that is expected rather than a fault.
NO_GPU = "No GPU series: NVML reports on NVIDIA GPUs only (a CPU run has none)"
NO_COMM = "No all-reduce: a single-process run does not communicate"
NO_DCGM = "No DCGM series: dcgm-exporter is not scraped, or its GPUs are not this run's"


def _dcgm(metric: str, scale: str = "") -> str:
    """A dcgm-exporter series, labelled with the run and rank whose llmops GPU series share its UUID."""
    owners = f'count by (UUID, run, rank) (llmops_gpu_memory_total_bytes{{{G}}})'
    return f"{metric}{scale} * on(UUID) group_left(run, rank) {owners}"


def memory_row() -> list:
    return [
        graph("Predicted vs actual memory per component", BYTES,
              "Refined prediction (set before the first step) against what the run holds, per component and rank. "
              "Actual params, grads and optimizer states are counted from the tensors; activations are measured "
              "on sampled steps.",
              query(f'llmops_memory_predicted_bytes{{{RUN}, model="refined", component!="peak"}}',
                    "predicted {{component}} (every rank)"),
              query(f'llmops_memory_actual_bytes{{{S}, component!="peak"}}', "actual {{component}} (rank {{rank}})"),
              min_value=0),
        graph("Predicted vs measured peak per rank", BYTES,
              "Predicted peak per model (document = formulas.md; refined = llmops' best) against the measured peak "
              "(allocator peak over the last window on CUDA; tensors on the CPU).",
              query(f'llmops_memory_predicted_bytes{{{RUN}, component="peak"}}',
                    "predicted peak, {{model}} (every rank)"),
              query(f'llmops_memory_actual_bytes{{{S}, component="peak"}}', "measured peak (rank {{rank}})"),
              min_value=0),
        graph("Drift ratio (measured / predicted peak)", RATIO,
              "1 = the prediction was right. LLMOpsMemoryDrift fires when the refined ratio stays outside the "
              "dashed band (llmops:threshold:memory_drift_ratio).",
              query(f"llmops_memory_drift_ratio{{{S}}}", "{{model}} (rank {{rank}})"),
              query("1 + llmops:threshold:memory_drift_ratio", "alert above"),
              query("1 - llmops:threshold:memory_drift_ratio", "alert below"),
              min_value=0),
        states("OOM risk by source",
               "prediction: the predicted peak exceeds the budget; measured: the measured peak does; trend: memory "
               "grows toward it. LLMOpsOOMRisk fires on any of them.",
               {"0": ("ok", "green"), "1": ("OOM risk", "red")},
               query(f"max by (run, rank, source) (llmops_oom_risk{{{S}}})", "{{source}} (rank {{rank}})")),
        graph("Headroom to the budget", BYTES,
              "Safety × budget minus the measured peak (what the run may still grow), and free device memory per GPU.",
              query(f"llmops_memory_budget_bytes{{{S}}} * on(run) group_left() llmops_memory_safety_ratio{{{RUN}}}"
                    f' - ignoring(component) llmops_memory_actual_bytes{{{S}, component="peak"}}',
                    "under safety × budget (rank {{rank}})"),
              query(f"llmops_gpu_memory_total_bytes{{{G}}} - llmops_gpu_memory_used_bytes{{{G}}}",
                    "GPU {{gpu}} free (rank {{rank}})")),
        graph("Batch size vs largest safe batch", COUNT,
              "Micro-batch in use and the largest one predicted to fit under safety × budget.",
              query(f"llmops_batch_size{{{RUN}}}", "in use (every rank)"),
              query(f"llmops_batch_size_max_safe{{{RUN}}}", "largest safe, {{model}} (every rank)"),
              min_value=0),
    ]


def gpu_row() -> list:
    return [
        graph("GPU memory used / total", BYTES, "NVML, per GPU: all processes, this rank's process, and the total.",
              query(f"llmops_gpu_memory_used_bytes{{{G}}}", "GPU {{gpu}} used (rank {{rank}})"),
              query(f"llmops_gpu_process_memory_bytes{{{G}}}", "GPU {{gpu}} this process (rank {{rank}})"),
              query(f"llmops_gpu_memory_total_bytes{{{G}}}", "GPU {{gpu}} total"),
              min_value=0, empty=NO_GPU),
        graph("GPU utilisation", RATIO, "NVML busy fraction per GPU.",
              query(f"llmops_gpu_utilization_ratio{{{G}}}", "GPU {{gpu}} (rank {{rank}})"), min_value=0,
              empty=NO_GPU),
    ]


def training_row() -> list:
    return [
        graph("Step time per rank", SECONDS,
              "Mean wall time of a training step per rank, and the run's median; LLMOpsStraggler fires for a rank "
              "over the median by more than llmops:threshold:straggler_ratio.",
              query(_mean("llmops_step_duration_seconds"), "rank {{rank}}"),
              query(f"llmops:run_step_duration_seconds:median5m{{{RUN}}}", "median of run {{run}}"),
              min_value=0),
        graph("Step time across ranks", SECONDS,
              "The run's fastest, median and slowest rank by mean step time over 5 minutes, and which rank is the "
              "slowest: recorded per run (group llmops-ranks), so the panel reads three series however many ranks "
              "the run has. LLMOpsStraggler compares each rank with the median.",
              query(f"llmops:run_step_duration_seconds:min5m{{{RUN}}}", "fastest rank"),
              query(f"llmops:run_step_duration_seconds:median5m{{{RUN}}}", "median"),
              query(f"llmops:run_step_duration_seconds:max5m{{{RUN}}}", "slowest rank"),
              query(f"llmops:run_slowest_rank_step_duration_seconds:mean5m{{{RUN}}}", "slowest: rank {{rank}}"),
              min_value=0),
        graph("Peak memory across ranks", BYTES,
              "The run's smallest, median and largest measured peak per device, and the rank with the largest "
              "(recorded per run, group llmops-ranks).",
              query(f"llmops:run_memory_peak_bytes:min{{{RUN}}}", "smallest"),
              query(f"llmops:run_memory_peak_bytes:median{{{RUN}}}", "median"),
              query(f"llmops:run_memory_peak_bytes:max{{{RUN}}}", "largest"),
              query(f"llmops:run_memory_peak_bytes:max_rank{{{RUN}}}", "largest: rank {{rank}}"),
              min_value=0),
        graph("Throughput", "suffix: samples/s", "Samples per second, summed over the selected ranks.",
              query(f"sum by (run) (rate(llmops_samples_total{{{S}}}[{RATE}]))", "{{run}}"), min_value=0),
        states("Training stalled",
               "1 while no step has finished on the rank for max(stall_min_seconds, stall_factor × the recent p99 "
               "step time); its stacks are in llmops_runs/<run>/stall-rank<R>.txt. LLMOpsTrainingStalled fires "
               "after a minute of it.",
               {"0": ("ok", "green"), "1": ("stalled", "red")},
               query(f"max by (run, rank) (llmops_train_stalled{{{S}}})", "rank {{rank}}")),
        graph("Step time against the rank's own median", RATIO,
              "Each rank's step (less the all-reduce it waited for) over the median of its recent steps, the "
              "largest in each minute: above 1 when a rank slows down against itself.",
              query(f"max_over_time(llmops_step_time_median_ratio{{{S}}}[1m])", "ratio, rank {{rank}}"),
              min_value=0),
    ]


def _phase_rate(selector: str = S) -> str:
    return f"rate(llmops_step_phase_seconds_total{{{selector}}}[{RATE}])"


def time_row() -> list:
    return [
        graph("Where each step went", RATIO,
              "Share of the training time per phase, per rank: data (waiting for the next batch; on a GPU, the time "
              "the GPU waited for the host), forward, backward, optimizer, and under DDP the all-reduce time not "
              "hidden behind backward (comm_exposed). The phases add up to the wall time between batch ends.",
              query(f"sum by (run, rank, phase) ({_phase_rate()}) / ignoring(phase) group_left "
                    f"sum by (run, rank) ({_phase_rate()})", "{{phase}} (rank {{rank}})"),
              min_value=0, stacked=True),
        graph("Tokens per second", "suffix: tokens/s",
              "Tokens processed per second (non-padding tokens where the batch has an attention mask), summed over "
              "the selected ranks.",
              query(f"sum by (run) (rate(llmops_tokens_total{{{S}}}[{RATE}]))", "{{run}}"), min_value=0),
        graph("Model FLOPs utilisation (MFU)", RATIO,
              "Model FLOP/s (6·N + 12·L·h·s per token, PaLM appendix B) over the device's dense peak, per sampling "
              "window. Absent where the peak is unknown: a GPU not in the table, or a CPU run without peak_flops=.",
              query(f"llmops_mfu_ratio{{{S}}}", "rank {{rank}}"), min_value=0,
              empty="No MFU: the device's peak is unknown (pass LLMOpsMonitor(peak_flops=...))"),
        graph("GPU power", WATTS, "NVML power draw per GPU.",
              query(f"llmops_gpu_power_watts{{{G}}}", "GPU {{gpu}} (rank {{rank}})"), min_value=0, empty=NO_GPU),
        graph("Energy per token", JOULES,
              "Joules per token per rank: the NVML energy counter's rate over the tokens' rate (the GPU's own "
              "energy, not the host's).",
              query(f"sum by (run, rank) (rate(llmops_gpu_energy_joules_total{{{G}}}[{RATE}])) / "
                    f"sum by (run, rank) (rate(llmops_tokens_total{{{S}}}[{RATE}]))", "rank {{rank}}"),
              min_value=0, empty=NO_GPU),
    ]


def comm_row() -> list:
    return [
        graph("All-reduce time", SECONDS,
              "Mean time of one gradient all-reduce (per DDP bucket). Only distributed runs communicate.",
              query(_mean("llmops_comm_allreduce_duration_seconds"), "rank {{rank}}"), min_value=0, empty=NO_COMM),
        graph("All-reduce share of step time", RATIO,
              "Share of each step's wall time spent in all-reduce over 5 minutes, from the two histograms (an "
              "upper bound: DDP overlaps it with backward). What LLMOpsCommSlow (step_share) reads.",
              query(f"llmops:comm_step_time:ratio5m{{{S}}}", "rank {{rank}}"),
              query("llmops:threshold:comm_step_time_ratio", "alert above"),
              min_value=0, empty=NO_COMM),
        graph("Bus bandwidth", BYTES_PER_SECOND, "All-reduce bus bandwidth (nccl-tests definition) per rank, and "
              "the best 10-minute median the run has reached (LLMOpsCommSlow fires under half of it).",
              query(f"llmops_comm_bus_bandwidth_bytes_per_second{{{S}}}", "rank {{rank}}"),
              query(f"llmops:comm_bus_bandwidth_bytes_per_second:best{{{S}}}", "best, rank {{rank}}"), min_value=0,
              empty=NO_COMM),
    ]


def checkpoint_row() -> list:
    return [
        graph("Time since the last checkpoint", SECONDS,
              "Since the last successful save, or since the process started training before its first save. "
              "LLMOpsCheckpointStale fires above the dashed line while the run trains.",
              query(f"time() - llmops_checkpoint_last_success_timestamp_seconds{{{S}}}"
                    f" or time() - llmops_run_start_timestamp_seconds{{{S}}}", "rank {{rank}}"),
              query("llmops:threshold:checkpoint_max_age_seconds", "alert above"),
              min_value=0),
        graph("Checkpoint save duration", SECONDS, "Mean time to write one checkpoint since the run started.",
              query(f"llmops_checkpoint_save_duration_seconds_sum{{{S}}}"
                    f" / llmops_checkpoint_save_duration_seconds_count{{{S}}}", "rank {{rank}}"),
              min_value=0),
        graph("Checkpoint size", BYTES, "Size of the last checkpoint written.",
              query(f"llmops_checkpoint_size_bytes{{{S}}}", "rank {{rank}}"), min_value=0),
        graph("Checkpoint saves, failures and restores", COUNT,
              "Totals since the run started; a failure is also counted before it is re-raised.",
              query(f"llmops_checkpoint_saves_total{{{S}}}", "saves (rank {{rank}})"),
              # the failures counter appears at the first failure: until then, 0 for each rank that saves
              query(f"llmops_checkpoint_failures_total{{{S}}} or 0 * llmops_checkpoint_saves_total{{{S}}}",
                    "failures (rank {{rank}})"),
              query(f"llmops_checkpoint_restores_total{{{S}}} or 0 * llmops_train_step{{{S}}}",
                    "restores (rank {{rank}})"),
              min_value=0),
    ]


def monitor_row() -> list:
    return [
        graph("Monitor errors by probe", COUNT,
              "Errors caught inside the monitor (the run went on); a probe's series may be stale meanwhile.",
              query(f"sum by (run, rank, probe) (llmops_monitor_errors_total{{{S}}})", "{{probe}} (rank {{rank}})"),
              min_value=0),
        info_table("Build", "Versions and settings of the run (llmops_build_info, from rank 0).",
                   query(f"llmops_build_info{{{RUN}}}", instant=True, table_format=True), width=12, height=8),
    ]


def dcgm_row() -> list:
    return [
        graph("DCGM: framebuffer used by the run's GPUs", BYTES,
              "dcgm-exporter's DCGM_FI_DEV_FB_USED (MiB) joined on(UUID) with llmops' GPU series.",
              query(_dcgm("DCGM_FI_DEV_FB_USED", " * 1048576"), "GPU {{gpu}} (rank {{rank}})"), min_value=0,
              empty=NO_DCGM),
        graph("DCGM: GPU utilisation", RATIO, "DCGM_FI_DEV_GPU_UTIL (%) joined on(UUID).",
              query(_dcgm("DCGM_FI_DEV_GPU_UTIL", " / 100"), "GPU {{gpu}} (rank {{rank}})"), min_value=0,
              empty=NO_DCGM),
        graph("DCGM: power", "watt", "DCGM_FI_DEV_POWER_USAGE joined on(UUID).",
              query(_dcgm("DCGM_FI_DEV_POWER_USAGE"), "GPU {{gpu}} (rank {{rank}})"), min_value=0, empty=NO_DCGM),
        graph("DCGM: last XID error", COUNT, "DCGM_FI_DEV_XID_ERRORS joined on(UUID): the last XID the driver "
              "reported (0: none). 13, 31, 43: application faults; 48, 63, 64, 74, 79: hardware, drain the node.",
              query(_dcgm("DCGM_FI_DEV_XID_ERRORS"), "GPU {{gpu}} (rank {{rank}})"), min_value=0, empty=NO_DCGM),
    ]


ROWS = (("Memory: predicted vs actual", memory_row), ("GPUs", gpu_row), ("Training", training_row),
        ("Where the time goes: phases, throughput, MFU, energy", time_row), ("Communication", comm_row),
        ("Checkpoints", checkpoint_row), ("Monitor", monitor_row))


def build() -> dashboard.Dashboard:
    """The dashboard builder; ``llmops dashboards`` renders it to JSON."""
    d = (dashboard.Dashboard(TITLE).uid(UID).tags(["llmops"]).refresh("30s").time("now-1h", "now")
         .timezone("browser").editable()
         .description("Predicted vs actual memory, OOM risk, GPUs, step time, communication and checkpoints "
                      "of one llmops training run. Metrics: docs/metrics.md; what each alert means: the Runbooks link.")
         .link(dashboard.DashboardLink("Runbooks").type(DashboardLinkType.LINK).url(RUNBOOK_BASE).icon("doc")
               .tooltip("What each llmops alert means and what to do").target_blank(True))
         .with_variable(dashboard.DatasourceVariable("datasource").label("Datasource").type("prometheus"))
         .with_variable(label_variable("run", "Run", "llmops_build_info", all_ranks=False))
         # every rank sets its start time (llmops_build_info is run-level: rank 0's alone)
         .with_variable(label_variable("rank", "Rank", 'llmops_run_start_timestamp_seconds{run=~"$run"}',
                                       all_ranks=True))
         .with_variable(label_variable("gpu", "GPU", 'llmops_gpu_memory_total_bytes{run=~"$run", rank=~"$rank"}',
                                       all_ranks=True)))
    next_id = 1
    for title, panels in ROWS:
        d = d.with_row(dashboard.Row(title).id(next_id))
        next_id += 1
        for panel in panels():
            d = d.with_panel(panel.id(next_id))
            next_id += 1
    dcgm = dashboard.Row("DCGM exporter (when it is scraped too)").id(next_id).collapsed(True)
    next_id += 1
    for panel in dcgm_row():
        dcgm = dcgm.with_panel(panel.id(next_id))
        next_id += 1
    return d.with_row(dcgm)
