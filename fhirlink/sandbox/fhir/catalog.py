"""Code catalogues for the generator: Cerner codeSet codes beside LOINC / SNOMED / RxNorm / CVX.

The Millennium codes (codeSet 72 etc.) are invented for the sandbox; the standard codes are real.
"""

from __future__ import annotations

# (cerner code, loinc, display, unit, low, high, decimals)
VITALS = [
    ("703511", "8867-4", "Heart Rate", "/min", 55, 105, 0),
    ("703540", "9279-1", "Respiratory Rate", "/min", 12, 22, 0),
    ("703558", "8310-5", "Temperature Oral", "Cel", 36.1, 38.2, 1),
    ("703498", "59408-5", "SpO2", "%", 92, 100, 0),
    ("2700653", "29463-7", "Weight Measured", "kg", 55, 110, 1),
    ("2700656", "8302-2", "Height/Length Measured", "cm", 150, 195, 0),
]
BP = ("703501", "85354-9", "Blood pressure panel")
BP_COMPONENTS = [
    ("703501", "8480-6", "Systolic Blood Pressure", 100, 150),
    ("703516", "8462-4", "Diastolic Blood Pressure", 60, 95),
]
LABS = [
    ("703535", "718-7", "Hgb Bld-mCnc", "g/dL", 11.0, 17.5, 1, (12.0, 17.0)),
    ("2700590", "2345-7", "Glucose Lvl", "mg/dL", 70, 180, 0, (70, 99)),
    ("2700604", "2951-2", "Sodium Lvl", "mmol/L", 132, 148, 0, (135, 145)),
    ("2700611", "2823-3", "Potassium Lvl", "mmol/L", 3.2, 5.4, 1, (3.5, 5.1)),
    ("2700622", "2160-0", "Creatinine Lvl", "mg/dL", 0.5, 1.6, 2, (0.6, 1.3)),
    ("2700633", "4548-4", "Hemoglobin A1c", "%", 4.8, 9.5, 1, (4.0, 5.6)),
    ("2700644", "2093-3", "Cholesterol", "mg/dL", 140, 260, 0, (0, 200)),
    ("2700655", "6690-2", "WBC", "10*3/uL", 3.5, 12.5, 1, (4.5, 11.0)),
]
SOCIAL = [
    ("SH-72", "72166-2", "Tobacco smoking status", "http://loinc.org"),
    ("SH-81", "363908000", "Substance Abuse", "http://snomed.info/sct"),
    ("SH-63", "11331-6", "Alcohol use", "http://loinc.org"),
]
CONDITIONS = [
    ("38341003", "I10", "Hypertension"),
    ("44054006", "E11.9", "Type 2 diabetes mellitus"),
    ("195967001", "J45.909", "Asthma"),
    ("35489007", "F32.9", "Depressive disorder"),
    ("55822004", "E78.5", "Hyperlipidemia"),
    ("399211009", "I25.2", "History of myocardial infarction"),
    ("40055000", "N18.9", "Chronic kidney disease"),
    ("271737000", "D64.9", "Anemia"),
    ("267036007", "R06.00", "Dyspnea"),
    ("25064002", "R51.9", "Headache"),
    ("22298006", "I21.9", "Myocardial infarction"),
    ("68566005", "N39.0", "Urinary tract infection"),
]
ALLERGIES = [
    ("medication", "7980", "Penicillin G", "http://www.nlm.nih.gov/research/umls/rxnorm", "Hives"),
    ("food", "91935009", "Peanut", "http://snomed.info/sct", "Anaphylaxis"),
    ("environment", "256277009", "Grass pollen", "http://snomed.info/sct", "Rhinitis"),
    ("medication", "1191", "Aspirin", "http://www.nlm.nih.gov/research/umls/rxnorm", "Rash"),
    ("food", "102263004", "Eggs", "http://snomed.info/sct", "Nausea"),
]
MEDICATIONS = [
    ("314076", "lisinopril 10 MG Oral Tablet", "1 tab(s) orally once a day"),
    ("860975", "metformin 500 MG Oral Tablet", "1 tab(s) orally 2 times a day"),
    ("617314", "atorvastatin 10 MG Oral Tablet", "1 tab(s) orally once a day at bedtime"),
    ("745679", "albuterol 90 MCG/ACTUAT Inhaler", "2 puff(s) inhaled every 4 hours as needed"),
    ("310965", "ibuprofen 200 MG Oral Tablet", "2 tab(s) orally every 6 hours as needed"),
    ("197361", "amlodipine 5 MG Oral Tablet", "1 tab(s) orally once a day"),
]
VACCINES = [
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
    ("115", "Tdap"),
    ("133", "Pneumococcal conjugate PCV 13"),
    ("43", "Hepatitis B, adult dosage"),
]
PROCEDURES = [
    ("80146002", "Appendectomy"),
    ("73761001", "Colonoscopy"),
    ("387713003", "Surgical procedure"),
    ("71388002", "Procedure"),
    ("18286008", "Catheter ablation of tissue of heart"),
    ("232717009", "Coronary artery bypass grafting"),
]
DOC_TYPES = [
    ("2820507", "11506-3", "Progress Note"),
    ("2820510", "18842-5", "Discharge Summary"),
    ("2820512", "34117-2", "History and Physical"),
    ("2820515", "11488-4", "Consultation Note"),
]
REPORTS = [
    ("LAB", "24323-8", "Comprehensive metabolic panel"),
    ("LAB", "58410-2", "CBC panel"),
    ("RAD", "36643-5", "XR Chest 2 Views"),
    ("LAB", "57698-3", "Lipid panel"),
]
DEVICES = [
    ("14106009", "Cardiac pacemaker"),
    ("702172008", "Home continuous positive airway pressure unit"),
    ("469829002", "Insulin pump"),
]
GOALS = [
    "Lose 5 kg",
    "Walk 30 minutes a day",
    "HbA1c below 7%",
    "Quit smoking",
    "Blood pressure below 130/80",
]
PRACTITIONERS = [
    ("Cerner", "Test", "Physician"),
    ("Ortiz", "Maria", "Physician"),
    ("Chen", "Wei", "Nurse"),
    ("Okafor", "Ada", "Physician"),
    ("Jensen", "Lars", "Pharmacist"),
    ("Singh", "Priya", "Physician"),
    ("Nakamura", "Ken", "Physician"),
    ("Dubois", "Claire", "Nurse"),
]
ORGANIZATIONS = [
    "Sandbox Regional Medical Center",
    "Sandbox Family Clinic",
    "Sandbox Laboratory Services",
]
LOCATIONS = [
    "Emergency Department",
    "Medical Floor 3W",
    "Family Practice Clinic",
    "Radiology",
    "Main Lab",
    "ICU",
]
