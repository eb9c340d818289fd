// One screen: models, protocol, compute units, run/stop with progress, results, share.
import StarEdgeBenchCore
import SwiftUI

struct ContentView: View {
    @StateObject private var bench = BenchViewModel()

    var body: some View {
        NavigationStack {
            Form {
                if let error = bench.loadError {
                    Section { Text(error).foregroundStyle(.red) }
                }
                Section("Models in the app") {
                    ForEach(bench.models) { model in
                        Toggle(isOn: bench.isSelected(model)) {
                            VStack(alignment: .leading) {
                                Text(model.name)
                                Text("\(model.precision) · \(model.task)" + (model.paramsM.map { String(format: " · %.2fM params", $0) } ?? ""))
                                    .font(.caption).foregroundStyle(.secondary)
                            }
                        }
                    }
                }
                Section("Protocol") {
                    Picker("Protocol", selection: $bench.protocolName) {
                        ForEach(BenchProtocol.presets, id: \.name) { p in Text(p.name).tag(p.name) }
                    }
                    Text(bench.selectedProtocol.description).font(.caption).foregroundStyle(.secondary)
                }
                Section("Compute units") {
                    ForEach(ComputeUnits.allCases, id: \.self) { unit in
                        Toggle(unit.label, isOn: bench.isSelected(unit))
                    }
                }
                Section("Device label in the results") {
                    TextField("e.g. iPhone 13", text: $bench.machineLabel)
                }
                Section {
                    if bench.isRunning {
                        ProgressView(value: bench.progress) { Text(bench.status).font(.caption) }
                        Button("Stop", role: .destructive) { bench.stop() }
                    } else {
                        Button("Run") { bench.run() }.disabled(!bench.canRun)
                        if !bench.status.isEmpty { Text(bench.status).font(.caption).foregroundStyle(.secondary) }
                    }
                }
                if !bench.results.isEmpty {
                    Section("Results") {
                        ResultsTable(results: bench.results, languageModels: bench.languageModels)
                    }
                }
                if let url = bench.resultsURL {
                    Section("Results file") {
                        ShareLink(item: url) { Label("Share JSON", systemImage: "square.and.arrow.up") }
                        Text("Files app: On My iPhone › StarEdge Bench › \(url.lastPathComponent)")
                            .font(.caption).foregroundStyle(.secondary)
                    }
                }
            }
            .navigationTitle("StarEdge Bench")
        }
    }
}

/// model | compute units | reported latency (ms, or tokens/s for language models) | runs
struct ResultsTable: View {
    let results: [BenchResultRecord]
    let languageModels: Set<String>

    var body: some View {
        Grid(alignment: .leading, horizontalSpacing: 12, verticalSpacing: 6) {
            GridRow {
                Text("model").bold()
                Text("units").bold()
                Text("latency").bold()
                Text("runs").bold()
            }
            ForEach(Array(results.enumerated()), id: \.offset) { _, r in
                GridRow {
                    Text(r.model)
                    Text(ComputeUnits(rawValue: String(r.backend.dropFirst("coreml:".count)))?.label ?? r.backend)
                    Text(figure(r)).monospacedDigit()
                    Text("\(r.runs.count)")
                }
                if let error = r.error {
                    GridRow {
                        Text(error).font(.caption).foregroundStyle(.secondary).gridCellColumns(4)
                    }
                }
            }
        }
        .font(.callout)
    }

    private func figure(_ r: BenchResultRecord) -> String {
        guard let ms = r.latencyMs else { return r.status }
        if languageModels.contains(r.model) && ms > 0 { return String(format: "%.1f tok/s", 1000 / ms) }
        return String(format: "%.3f ms", ms) + (r.status == "interrupted" ? " *" : "")
    }
}
