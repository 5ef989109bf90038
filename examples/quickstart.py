"""ndigits -> a trained spiking CNN -> NIR + netx -> verified spike for spike -> joules."""
import spikeline as sl

config = sl.TrainConfig(dataset="ndigits", model="cnn", heads="evolutionary", epochs=1,
                        batch_size=16, limit_train=128, limit_test=32)
run = sl.train(config, max_steps=8, progress=False)      # a new folder under the temp dir
print(run)
artifact = sl.export(run)                                # heads stripped, BN folded, 8-bit
print(artifact)
certificate = sl.verify(artifact, "ndigits", backends=["nir"])
print(certificate)                                       # raises VerifyFailed on a mismatch
report = sl.energy(artifact, "ndigits", convention="lemaire", hardware="cmos45_int8")
print(report)
report.plot().savefig(artifact.path / "energy_layers.png")
