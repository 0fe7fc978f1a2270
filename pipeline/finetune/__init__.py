"""Fine-tuning BERT and GPT on downstream tasks: GLUE-style classification and regression, NER, SQuAD, GPT LM.

``python -m pipeline finetune --config recipes/finetune/<task>.yaml --checkpoint <release or HF folder>``.
"""
