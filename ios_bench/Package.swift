// swift-tools-version:5.10
// StarEdge on-device benchmark: a platform-neutral core (compiled and tested on Linux too),
// a CoreML runner (Apple platforms only), and a command-line tool. The SwiftUI app in App/
// is an XcodeGen project that uses this package. No dependencies beyond the toolchain.
import PackageDescription

let package = Package(
    name: "StarEdgeBench",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "StarEdgeBenchCore", targets: ["StarEdgeBenchCore"]),
        .library(name: "StarEdgeBenchCoreML", targets: ["StarEdgeBenchCoreML"]),
        .executable(name: "staredge-bench-mac", targets: ["staredge-bench-mac"]),
    ],
    targets: [
        .target(name: "StarEdgeBenchCore"),
        .target(name: "StarEdgeBenchCoreML", dependencies: ["StarEdgeBenchCore"]),
        .executableTarget(name: "staredge-bench-mac", dependencies: ["StarEdgeBenchCore", "StarEdgeBenchCoreML"]),
        .testTarget(name: "StarEdgeBenchCoreTests", dependencies: ["StarEdgeBenchCore"]),
    ],
    swiftLanguageVersions: [.v5]
)
