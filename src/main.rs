//! The `idefics3` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use idefics3::backend::{cpu::CpuBackend, ActDtype};
use idefics3::generate::greedy;
use idefics3::model::Idefics3;
use idefics3::tensor_io::{read_inputs, write_tensors, OutTensor};

#[derive(Parser)]
#[command(
    name = "idefics3",
    version,
    about = "Idefics3 / SmolVLM inference engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the model on tensors saved from the transformers processor and writes the logits of every
    /// position (and, with --greedy N, N greedy tokens) for exact comparison with a reference.
    Forward {
        /// Checkpoint directory (config.json and safetensors weights).
        #[arg(long)]
        model: PathBuf,
        /// safetensors file with input_ids [1, L] and optionally pixel_values [1, T, 3, S, S] and
        /// pixel_attention_mask [1, T, S, S].
        #[arg(long)]
        inputs: PathBuf,
        /// Output safetensors file: logits [L, V] f32, image_features [T*q, H] when pixels were
        /// given, and generated_ids [N] i64 with --greedy.
        #[arg(long)]
        out: PathBuf,
        /// Activation precision: f32 (exact reference) or bf16 (rounded as transformers in bfloat16).
        #[arg(long, default_value = "f32")]
        dtype: ActDtype,
        /// Also generate N greedy tokens (end-of-sequence does not stop it).
        #[arg(long)]
        greedy: Option<usize>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Forward {
            model,
            inputs,
            out,
            dtype,
            greedy: n,
            threads,
        } => {
            let inputs = read_inputs(&inputs)?;
            let model = Idefics3::load(&model, CpuBackend::new(dtype, threads)?)?;
            let n_new = n.unwrap_or(0);
            let res = greedy(
                &model,
                &inputs.input_ids,
                inputs.pixels.as_ref(),
                n_new,
                true,
            )?;
            let vocab = model.config().text.vocab_size;
            let hidden = model.config().text.hidden_size;
            let mut tensors = vec![(
                "logits".to_string(),
                OutTensor::F32(res.prompt_logits, vec![inputs.input_ids.len(), vocab]),
            )];
            if let Some(f) = res.image_features {
                let rows = f.len() / hidden;
                tensors.push((
                    "image_features".into(),
                    OutTensor::F32(f, vec![rows, hidden]),
                ));
            }
            let mut summary = format!(
                "wrote {}: logits [{}, {vocab}]",
                out.display(),
                inputs.input_ids.len()
            );
            if let Some((_, OutTensor::F32(_, shape))) = tensors.get(1) {
                summary += &format!(", image_features {shape:?}");
            }
            if n.is_some() {
                let listed: Vec<String> = res.ids.iter().map(u32::to_string).collect();
                summary += &format!(", generated_ids [{}]", listed.join(", "));
                let ids: Vec<i64> = res.ids.iter().map(|&i| i as i64).collect();
                let len = ids.len();
                tensors.push(("generated_ids".into(), OutTensor::I64(ids, vec![len])));
            }
            write_tensors(&out, tensors)?;
            println!("{summary}");
            Ok(())
        }
    }
}
