# Thin entry point for rule make_swap_table (logic: s3vae.reporting.tables.swap_table).
from s3vae.reporting.tables import format_table, swap_table, write_csv
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
table = swap_table(list(snakemake.input.evals), snakemake.params.rows, snakemake.params.not_implemented)
write_csv(table, snakemake.output[0])
print(format_table(table))
