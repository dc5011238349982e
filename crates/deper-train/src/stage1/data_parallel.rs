//! Data-parallel stage 1 (`deper train stage1 --devices`), as burn-train's DDP strategy does it:
//! one thread and one model replica per device, each global batch split evenly between the
//! devices, the gradients averaged by burn's collective all-reduce before every optimizer step,
//! the replicas checked equal after every epoch. Across machines, burn's collective configuration
//! comes from [`DdpSettings`].

use burn::collective::{CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use deper_model::Deper;

use super::train::{train_peer, EpochMetrics, Job, Progress};
use super::DdpSettings;
use crate::{Result, TrainError};

/// Trains one replica of `model` per device (more than one), each on its own thread; the first
/// device reports `progress`. A device that failed says why; the others only report that a peer
/// stopped.
pub(super) fn train_replicas<B: AutodiffBackend>(
    job: &Job,
    model: Deper<B>,
    devices: &[B::Device],
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EpochMetrics>> {
    let config = job.config;
    let device = &devices[0];
    let collective = collective_config(&config.train.ddp, devices.len())?;
    burn::collective::reset_collective::<B::InnerBackend>();
    let base = config.train.ddp.node_index * devices.len() as u32;
    let peer = |rank: usize| Peer { rank, count: devices.len(), id: PeerId::from(base + rank as u32) };
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = devices[1..]
            .iter()
            .enumerate()
            .map(|(i, dev)| {
                let (replica, collective) = (model.clone().fork(dev), collective.clone());
                scope.spawn(move || {
                    B::seed(dev, config.train.seed.wrapping_add(i as u64 + 1));
                    let peer = peer(i + 1);
                    peer.register::<B>(dev, collective)?;
                    let result = train_peer(job, peer, replica, dev, &mut |_| {});
                    peer.finish::<B>();
                    result
                })
            })
            .collect();
        let leader = peer(0);
        let first = leader.register::<B>(device, collective).and_then(|()| {
            let result = train_peer(job, leader, model, device, progress);
            leader.finish::<B>();
            result
        });
        let mut results = vec![first];
        for worker in workers {
            results
                .push(worker.join().unwrap_or_else(|_| Err(TrainError::Config("a training device panicked".into()))));
        }
        results
    });
    outcome(results)
}

/// The run's outcome from each device's: the first real error (a device that stopped because
/// another did says nothing new), else the leader's metrics.
fn outcome(results: Vec<Result<Vec<EpochMetrics>>>) -> Result<Vec<EpochMetrics>> {
    let mut first_error = None;
    let mut metrics = None;
    for result in results {
        match result {
            Ok(m) => metrics = metrics.or(Some(m)),
            Err(TrainError::PeerStopped) => {}
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match (first_error, metrics) {
        (Some(e), _) => Err(e),
        (None, Some(m)) => Ok(m),
        (None, None) => Err(TrainError::PeerStopped),
    }
}

/// burn's collective configuration for `devices` devices on this node (and `ddp`'s nodes).
fn collective_config(ddp: &DdpSettings, devices: usize) -> Result<CollectiveConfig> {
    let mut config = CollectiveConfig::default().with_num_devices(devices);
    let global = [ddp.num_nodes.is_some(), ddp.global_address.is_some(), ddp.node_address.is_some()];
    if global.iter().any(|&g| g) {
        let (Some(nodes), Some(global_address), Some(node_address), Some(port)) =
            (ddp.num_nodes, &ddp.global_address, &ddp.node_address, ddp.data_service_port)
        else {
            return Err(TrainError::Config(
                "train.ddp: a multi-node run sets all of num_nodes, global_address, node_address and data_service_port"
                    .into(),
            ));
        };
        if ddp.node_index >= nodes {
            return Err(TrainError::Config(format!(
                "train.ddp.node_index {} must be below num_nodes {nodes}",
                ddp.node_index
            )));
        }
        let address = |s: &str| s.parse().map_err(|e| TrainError::Config(format!("train.ddp: address `{s}`: {e}")));
        config = config
            .with_num_nodes(nodes)
            .with_global_address(address(global_address)?)
            .with_node_address(address(node_address)?)
            .with_data_service_port(port);
    }
    Ok(config)
}

/// One device of a data-parallel run (`count == 1`: training alone, no collective calls).
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    pub(super) rank: usize,
    pub(super) count: usize,
    id: PeerId,
}

impl Peer {
    pub(super) fn single() -> Self {
        Self { rank: 0, count: 1, id: PeerId::from(0) }
    }

    fn register<B: AutodiffBackend>(&self, device: &B::Device, config: CollectiveConfig) -> Result<()> {
        burn::collective::register::<B::InnerBackend>(self.id, device.clone(), config)
            .map_err(|e| TrainError::Config(format!("data-parallel setup on device {}: {e:?}", self.rank)))
    }

    fn finish<B: AutodiffBackend>(&self) {
        // Only fails when the peer never registered, which the caller already reported.
        let _ = burn::collective::finish_collective::<B::InnerBackend>(self.id);
    }

    /// This device's share of a global batch: a contiguous, near-equal slice.
    pub(super) fn shard<'c>(&self, chunk: &'c [usize]) -> &'c [usize] {
        &chunk[self.rank * chunk.len() / self.count..(self.rank + 1) * chunk.len() / self.count]
    }

    /// `values` summed over all devices.
    pub(super) fn sum<B: AutodiffBackend>(&self, values: Vec<f32>, device: &B::Device) -> Result<Vec<f32>> {
        if self.count == 1 {
            return Ok(values);
        }
        let n = values.len();
        let local = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), device);
        let summed = burn::collective::all_reduce::<B::InnerBackend>(
            self.id,
            local.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| TrainError::Config(format!("data-parallel all-reduce on device {}: {e:?}", self.rank)))?;
        let summed = Tensor::<B::InnerBackend, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(summed));
        summed.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))
    }

    /// The gradients averaged over all devices.
    pub(super) fn average<B: AutodiffBackend>(&self, grads: GradientsParams) -> Result<GradientsParams> {
        if self.count == 1 {
            return Ok(grads);
        }
        grads.all_reduce::<B::InnerBackend>(self.id, ReduceOperation::Mean).map_err(|e| {
            TrainError::Config(format!("data-parallel gradient all-reduce on device {}: {e:?}", self.rank))
        })
    }
}

/// Sum of all weights, per parameter tensor.
struct WeightSums(Vec<f32>);

impl<B: Backend> ModuleVisitor<B> for WeightSums {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().sum().into_scalar().elem::<f32>());
    }
}

/// Replicas that received the same averaged gradients hold the same weights; anything else
/// (a device that dropped a step, a backend that all-reduced wrongly) must stop the run.
pub(super) fn check_replicas_agree<B: AutodiffBackend>(
    peer: &Peer,
    model: &Deper<B>,
    device: &B::Device,
) -> Result<()> {
    let mut sums = WeightSums(Vec::new());
    model.visit(&mut sums);
    let mine = sums.0;
    let total = peer.sum::<B>(mine.clone(), device)?;
    let differs = mine.iter().zip(&total).any(|(&m, &t)| {
        let mean = t / peer.count as f32;
        (m - mean).abs() > 1e-5 * mean.abs().max(1.0)
    });
    let disagreeing = peer.sum::<B>(vec![f32::from(u8::from(differs))], device)?;
    if disagreeing[0] > 0.0 {
        return Err(TrainError::Config(format!(
            "data-parallel replicas diverged ({} of {} devices differ from the mean weights)",
            disagreeing[0], peer.count
        )));
    }
    Ok(())
}
